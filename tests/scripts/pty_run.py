"""Runs a command on a pseudo-terminal of 31 rows x 97 columns as a person at a terminal would,
following a conversation given as JSON in the first argument: ["wait", TEXT] waits until the
terminal shows TEXT, ["send", TEXT] types it, ["resize", ROWS, COLS] resizes the terminal (which
signals SIGWINCH to the command). Then it reads to the end, prints everything the terminal
showed, and exits with the command's exit code. Used by the tests of `paas run` and `paas db
psql` at a terminal."""
import fcntl, json, os, pty, select, struct, sys, termios, time

def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

steps = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    set_size(0, 31, 97)
    os.execvp(sys.argv[2], sys.argv[2:])

shown = b""
def wait_for(needle, timeout=90):
    global shown
    end = time.time() + timeout
    while needle not in shown:
        ready, _, _ = select.select([fd], [], [], max(0, end - time.time()))
        if not ready:
            sys.exit("timed out waiting for %r; the terminal showed %r" % (needle, shown))
        try:
            shown += os.read(fd, 4096)
        except OSError:
            sys.exit("the command ended before %r; the terminal showed %r" % (needle, shown))

for step in steps:
    if step[0] == "wait":
        wait_for(step[1].encode())
    elif step[0] == "send":
        os.write(fd, step[1].encode())
    elif step[0] == "resize":
        set_size(fd, step[1], step[2])
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    shown += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(shown.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
