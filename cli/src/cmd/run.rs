//! `paas run --app A -- CMD ARGS`: a one-off container of the current release, joined to this
//! terminal: stdin goes to it, its output comes here (at a terminal through a TTY of its own,
//! resized with this one), and its exit code becomes ours. See `protocol::attach`.

use crate::args::{Global, RunArgs};
use anyhow::Context;
use protocol::api::Attach;
use protocol::attach::Frame;
use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub async fn exec(g: &Global, args: RunArgs) -> anyhow::Result<ExitCode> {
    protocol::AppName::new(args.target.app.as_str())?;
    protocol::EnvName::new(args.target.env.as_str())?;
    let client = super::client(g)?;
    let (app, env) = (args.target.app.as_str(), args.target.env.as_str());
    let tty = !args.no_tty && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let started = client.run_attached(app, env, args.command, Attach { tty }).await?;
    let conn = client.attach_run(app, env, &started.id).await.context("joining the run")?;
    let code = session(conn, tty).await?;
    // Exit codes outside 0..=255 (signals, Docker's -1) map to a plain failure.
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Passes this terminal's input, size and the run's output until the run ends; its exit code.
pub async fn session<C: AsyncRead + AsyncWrite>(conn: C, tty: bool) -> anyhow::Result<i32> {
    let (mut from_run, mut to_run) = tokio::io::split(conn);
    // Restores the terminal however this ends (an error, a closed pipe's exit included).
    let raw = if tty { Some(RawMode::enable()?) } else { None };
    let mut input = stdin_reader();
    let mut resized = if tty {
        to_run.write_all(&size_frame().encode()).await?;
        Some(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?)
    } else {
        None
    };
    let mut stdin_open = true;
    loop {
        tokio::select! {
            frame = Frame::read(&mut from_run) => match frame {
                Ok(Some(Frame::Stdout(bytes))) => write_out(&mut std::io::stdout().lock(), &bytes, raw.as_ref()),
                Ok(Some(Frame::Stderr(bytes))) => write_out(&mut std::io::stderr().lock(), &bytes, raw.as_ref()),
                Ok(Some(Frame::Exit(code))) => return Ok(code),
                Ok(Some(Frame::Error(why))) => anyhow::bail!("the command could not run: {why}"),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => anyhow::bail!("the connection to the run broke off before the command ended"),
            },
            bytes = input.recv(), if stdin_open => {
                let frame = match bytes.flatten() {
                    Some(b) => Frame::Stdin(b),
                    None => {
                        stdin_open = false;
                        Frame::StdinEnd
                    }
                };
                to_run.write_all(&frame.encode()).await.context("sending input to the run")?;
            }
            Some(()) = async { resized.as_mut()?.recv().await } => {
                to_run.write_all(&size_frame().encode()).await.context("sending the terminal's size")?;
            }
        }
    }
}

/// Writes the run's output; a closed reader (`| head`) ends this command quietly, as a closed
/// pipe ends any other, after the terminal is restored.
fn write_out(out: &mut dyn Write, bytes: &[u8], raw: Option<&RawMode>) {
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
        if let Some(r) = raw {
            r.restore();
        }
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "error: cannot write the output: {e}");
        std::process::exit(1);
    }
}

/// Stdin in chunks as it comes (`None` at its end), read on a thread of its own: a blocking
/// read there never holds up the runtime or the process's exit.
fn stdin_reader() -> tokio::sync::mpsc::Receiver<Option<Vec<u8>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 << 10];
        let mut stdin = std::io::stdin().lock();
        loop {
            let chunk = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            };
            let end = chunk.is_none();
            if tx.blocking_send(chunk).is_err() || end {
                return;
            }
        }
    });
    rx
}

/// This terminal's size, as the run's TTY should have it.
fn size_frame() -> Frame {
    let size = rustix::termios::tcgetwinsize(std::io::stdout()).ok();
    let (cols, rows) = size.map_or((80, 24), |w| (w.ws_col.max(1), w.ws_row.max(1)));
    Frame::Resize { cols, rows }
}

/// The terminal in raw mode (keys go to the run as typed, Ctrl-C included), restored on drop.
pub struct RawMode(rustix::termios::Termios);

impl RawMode {
    pub fn enable() -> anyhow::Result<Self> {
        use rustix::termios::{tcgetattr, tcsetattr, OptionalActions};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).context("setting the terminal to raw mode")?;
        Ok(Self(saved))
    }

    fn restore(&self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, &self.0);
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}
