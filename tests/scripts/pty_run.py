"""Runs a command on a pseudo-terminal as a person at a terminal would: the terminal starts at
31 rows x 97 columns; then it waits for `size=31 97`, types `hello tty` and Enter, waits for
`line=hello tty`, resizes the terminal to 50 x 120 (which signals SIGWINCH to the command), presses
Enter, waits for `size=50 120`. Prints everything the terminal showed; exits with the command's
exit code. Used by tests/tests/run_attach.rs."""
import fcntl, os, pty, select, struct, sys, termios, time

def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

pid, fd = pty.fork()
if pid == 0:
    set_size(0, 31, 97)
    os.execvp(sys.argv[1], sys.argv[1:])

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

wait_for(b"size=31 97")
os.write(fd, b"hello tty\r")
wait_for(b"line=hello tty")
set_size(fd, 50, 120)
os.write(fd, b"\r")
wait_for(b"size=50 120")
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
