//! psql and the PostgreSQL tools inside database containers: argv for each tool (connecting
//! over the local socket with the platform's pinned options), and SQL scripts run through psql
//! with their variables on stdin.

use crate::docker::DockerClient;

/// Options every connection the platform opens as the superuser starts with. They win over
/// whatever the app set with `ALTER DATABASE ... SET` or `ALTER ROLE ... SET`, so names in the
/// platform's SQL resolve in `pg_catalog` only (temporary objects last): a function or operator
/// an app created in its own schema never runs with the superuser's rights.
pub const PINNED_OPTIONS: &str = "-c search_path=pg_catalog,pg_temp";

/// The path of `tool` in the image's PostgreSQL `version`.
/// The OS user the user's psql runs as in a server: not `postgres`, whom alone pg_hba.conf lets
/// connect as the superuser over the local socket (`dbroles::pg_hba`).
pub const SESSION_USER: &str = "nobody";

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

/// Runs a SQL script with psql as `user` in `database` and returns its tuples-only output; a
/// failure carries psql's own message. `vars` become psql variables set at the top of the
/// script on stdin (use them as `:'name'` or `:"name"`), so secrets stay off the command line.
pub async fn sql(
    docker: &DockerClient,
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
    let mut exec = docker.exec_start(container, cmd, true).await?;
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
