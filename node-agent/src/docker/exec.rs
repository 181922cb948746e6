//! The one way the agent runs a command inside a container: an exec with its streams attached
//! (stdin when asked, stdout streamed or by line, stderr kept short for errors). Health commands,
//! psql, dumps read from stdout and restores fed on stdin all use it. argv arrays only.

use super::{docker_message, DockerClient};
use anyhow::Context;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use tokio::io::{AsyncWrite, AsyncWriteExt};

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// A running exec: its stdin (when attached) and its multiplexed output.
pub struct Exec {
    id: String,
    pub input: Option<Pin<Box<dyn AsyncWrite + Send>>>,
    pub output: Output,
    docker: Docker,
    /// What the command printed on stderr, kept short for error messages.
    pub stderr: String,
    /// Bytes of stdout not yet returned as a line by [`Exec::line`].
    pending: Vec<u8>,
}

impl DockerClient {
    /// Starts `cmd` in the running `container`, stdin attached when `stdin`.
    pub async fn exec_start(&self, container: &str, cmd: Vec<String>, stdin: bool) -> anyhow::Result<Exec> {
        self.exec_with(container, CreateExecOptions { cmd: Some(cmd), ..Default::default() }, stdin).await
    }

    async fn exec_with(
        &self,
        container: &str,
        opts: CreateExecOptions<String>,
        stdin: bool,
    ) -> anyhow::Result<Exec> {
        let docker = &self.docker;
        let opts = CreateExecOptions::<String> {
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..opts
        };
        let exec = docker
            .create_exec(container, opts)
            .await
            .map_err(|e| anyhow::anyhow!("cannot run in {container}: {}", docker_message(&e)))?;
        match docker.start_exec(&exec.id, None).await? {
            StartExecResults::Attached { output, input } => Ok(Exec {
                id: exec.id,
                input: stdin.then_some(input),
                output,
                docker: docker.clone(),
                stderr: String::new(),
                pending: Vec::new(),
            }),
            StartExecResults::Detached => anyhow::bail!("the exec in {container} started detached"),
        }
    }

    /// Starts `cmd` as `user` in the running `container` on a TTY of its own, stdin attached:
    /// an interactive session (`paas db psql` at a terminal). Sized with [`Self::resize_exec`].
    pub async fn exec_tty(&self, container: &str, cmd: Vec<String>, user: &str) -> anyhow::Result<Exec> {
        let opts = CreateExecOptions::<String> {
            cmd: Some(cmd),
            tty: Some(true),
            user: Some(user.into()),
            // Docker gives an exec's TTY no TERM, and line editing needs one; a HOME the user
            // can write keeps psql's history for the session without a warning.
            env: Some(vec!["TERM=xterm".into(), "HOME=/tmp".into()]),
            ..Default::default()
        };
        self.exec_with(container, opts, true).await
    }

    /// Like [`Self::exec_start`], as the OS user `user` (`nobody` for the user's psql, which
    /// the server then cannot take for the superuser).
    pub async fn exec_start_as(
        &self,
        container: &str,
        cmd: Vec<String>,
        stdin: bool,
        user: &str,
    ) -> anyhow::Result<Exec> {
        let opts = CreateExecOptions { cmd: Some(cmd), user: Some(user.into()), ..Default::default() };
        self.exec_with(container, opts, stdin).await
    }

    /// Sets the size of the TTY of exec `id` ([`DockerClient::exec_tty`]).
    pub async fn resize_exec(&self, id: &str, cols: u16, rows: u16) -> anyhow::Result<()> {
        let size = bollard::exec::ResizeExecOptions { width: cols, height: rows };
        self.docker.resize_exec(id, size).await.map_err(|e| anyhow::anyhow!(docker_message(&e)))
    }

    /// Runs `cmd` inside a running container and returns its exit code (output is discarded).
    pub async fn exec(&self, name: &str, cmd: &[String]) -> anyhow::Result<i64> {
        Ok(self.exec_output(name, cmd).await?.0)
    }

    /// Runs `cmd` inside a running container; its exit code and standard output.
    pub async fn exec_output(&self, name: &str, cmd: &[String]) -> anyhow::Result<(i64, String)> {
        let (code, out, _) = self.exec_start(name, cmd.to_vec(), false).await?.finish().await?;
        Ok((code, out))
    }
}

impl Exec {
    fn keep_stderr(&mut self, message: &[u8]) {
        if self.stderr.len() < 8192 {
            self.stderr.push_str(&String::from_utf8_lossy(message));
        }
    }

    /// The next chunk of stdout (stderr is kept aside), or `None` at the end.
    pub async fn next_stdout(&mut self) -> Option<anyhow::Result<Bytes>> {
        loop {
            match self.output.next().await? {
                Ok(LogOutput::StdOut { message }) => return Some(Ok(message)),
                Ok(LogOutput::StdErr { message }) => self.keep_stderr(&message),
                Ok(_) => {}
                Err(e) => return Some(Err(anyhow::anyhow!("reading the command's output failed: {e}"))),
            }
        }
    }

    /// The next line of stdout, or `None` at the end.
    pub async fn line(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..i]).into_owned()));
            }
            match self.next_stdout().await {
                Some(chunk) => self.pending.extend_from_slice(&chunk?),
                None if self.pending.is_empty() => return Ok(None),
                None => {
                    return Ok(Some(String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()))
                }
            }
        }
    }

    pub async fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let input = self.input.as_mut().context("the command's stdin is not attached")?;
        input.write_all(data).await.context("writing to the command's stdin")?;
        input.flush().await.context("writing to the command's stdin")
    }

    /// Ends stdin, so the command sees end of file.
    pub async fn close_input(&mut self) -> anyhow::Result<()> {
        if let Some(mut input) = self.input.take() {
            input.shutdown().await.context("closing the command's stdin")?;
        }
        Ok(())
    }

    /// Reads everything left (stdout returned, stderr kept) and waits for the exit code.
    pub async fn finish(mut self) -> anyhow::Result<(i64, String, String)> {
        self.close_input().await?;
        let mut out = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
        while let Some(chunk) = self.next_stdout().await {
            out.push_str(&String::from_utf8_lossy(&chunk?));
        }
        let code = self.exit_code().await?;
        Ok((code, out, self.stderr))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub async fn exit_code(&mut self) -> anyhow::Result<i64> {
        // The output stream ends a moment before the engine records the exit code.
        for _ in 0..50 {
            let done = self.docker.inspect_exec(&self.id).await?;
            if done.running != Some(true) {
                return Ok(done.exit_code.unwrap_or(-1));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        anyhow::bail!("the command did not finish")
    }
}
