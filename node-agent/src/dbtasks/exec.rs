//! Commands inside database containers with their streams attached: SQL through psql over the
//! local socket, dumps read from stdout, restores fed on stdin. argv arrays only, never a shell.

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

/// Options every connection the platform opens as the superuser starts with. They win over
/// whatever the app set with `ALTER DATABASE ... SET` or `ALTER ROLE ... SET`, so names in the
/// platform's SQL resolve in `pg_catalog` only (temporary objects last): a function or operator
/// an app created in its own schema never runs with the superuser's rights.
pub const PINNED_OPTIONS: &str = "-c search_path=pg_catalog,pg_temp";

/// The path of `tool` in the image's PostgreSQL `version`.
pub fn binary(version: u32, tool: &str) -> String {
    format!("/usr/lib/postgresql/{version}/bin/{tool}")
}

/// `tool` of the image's PostgreSQL `version`, connecting over the local socket as `user` to
/// `database` with [`PINNED_OPTIONS`], followed by `extra` arguments.
pub fn tool(version: u32, tool: &str, user: &str, database: &str, extra: &[&str]) -> Vec<String> {
    let conninfo = format!("dbname={} options={}", conninfo_value(database), conninfo_value(PINNED_OPTIONS));
    let mut cmd = vec![binary(version, tool)];
    cmd.extend(["-U", user, "-d", &conninfo].iter().chain(extra).map(|a| a.to_string()));
    cmd
}

/// A value in a libpq connection string: single-quoted, `\` and `'` escaped.
fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// psql for scripts: no psqlrc, quiet, tuples only, stop at the first error.
pub fn script_psql(version: u32, user: &str, database: &str) -> Vec<String> {
    tool(version, "psql", user, database, &["-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"])
}

/// `\set name value` for a psql script: the value single-quoted with psql's escapes, so any
/// text (a password too) arrives unchanged and never on a command line.
fn psql_set(name: &str, value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '\'' => quoted.push_str("''"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            c => quoted.push(c),
        }
    }
    format!("\\set {name} '{quoted}'\n")
}

impl Exec {
    pub async fn start(
        docker: &Docker,
        container: &str,
        cmd: Vec<String>,
        stdin: bool,
    ) -> anyhow::Result<Self> {
        let opts = CreateExecOptions::<String> {
            cmd: Some(cmd),
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = docker.create_exec(container, opts).await.map_err(|e| {
            anyhow::anyhow!("cannot run in {container}: {}", crate::docker::docker_message(&e))
        })?;
        match docker.start_exec(&exec.id, None).await? {
            StartExecResults::Attached { output, input } => Ok(Self {
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

/// Runs a SQL script with psql as `user` in `database` and returns its tuples-only output; a
/// failure carries psql's own message. `vars` become psql variables set at the top of the
/// script on stdin (use them as `:'name'` or `:"name"`), so secrets stay off the command line.
pub async fn sql(
    docker: &Docker,
    container: &str,
    version: u32,
    user: &str,
    database: &str,
    vars: &[(&str, &str)],
    script: &str,
) -> anyhow::Result<String> {
    let cmd = script_psql(version, user, database);
    let mut input: String = vars.iter().map(|(k, v)| psql_set(k, v)).collect();
    input.push_str(script);
    let mut exec = Exec::start(docker, container, cmd, true).await?;
    exec.write(input.as_bytes()).await?;
    let (code, out, err) = exec.finish().await?;
    if code != 0 {
        anyhow::bail!("psql failed: {}", err.trim());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn platform_connections_pin_the_search_path() {
        let cmd = super::tool(15, "pg_dump", "postgres", "it's", &["-Fc"]);
        assert_eq!(cmd[0], "/usr/lib/postgresql/15/bin/pg_dump");
        assert_eq!(cmd[4], r"dbname='it\'s' options='-c search_path=pg_catalog,pg_temp'", "{cmd:?}");
        assert_eq!(cmd[5], "-Fc");
    }

    #[test]
    fn psql_variables_keep_any_text() {
        assert_eq!(super::psql_set("pw", "a'b\\c\nd"), "\\set pw 'a''b\\\\c\\nd'\n");
    }
}
