//! What drains send: RFC 5424 syslog messages in octet-counting framing (RFC 6587), and
//! batches of JSON lines for HTTPS drains, cut to a line and byte budget per request.

use protocol::logs::{LogSource, LogStream};

/// Lines and bytes one HTTPS request carries at most (one longer line still goes, alone).
pub const MAX_BATCH_LINES: usize = 1000;
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// syslog facility `user` (RFC 5424 table 1).
const FACILITY: u8 = 1;
/// stdout is informational; stderr, where most frameworks write their ordinary logging too, is
/// a warning rather than an error, so a receiver's error alerts do not fire on every line.
const SEVERITY_STDOUT: u8 = 6;
const SEVERITY_STDERR: u8 = 4;

/// A stored line as a drain sends it, with the app and environment it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainLine {
    /// The log store's line id: the drain's position after sending it.
    pub id: i64,
    /// Unix nanoseconds.
    pub at: i64,
    pub app: String,
    pub env: String,
    pub source: LogSource,
    pub process: String,
    pub replica: u32,
    pub release: u32,
    pub node: String,
    pub stream: LogStream,
    pub text: String,
}

/// An RFC 5424 header field: printable US-ASCII only (others become `_`), at most `max`
/// characters, `-` (the nil value) when empty.
fn header_field(s: &str, max: usize) -> String {
    let field: String = s.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).take(max).collect();
    if field.is_empty() {
        "-".into()
    } else {
        field
    }
}

/// RFC 5424 TIMESTAMP: UTC with at most six digits of fraction.
fn timestamp(ns: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(ns.into())
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "-".into())
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`. The
/// receiver tells apart app and environment by HOSTNAME (`env.app`), the source by APP-NAME
/// and the process and replica by PROCID (`web.2`); MSGID and structured data are nil.
pub fn syslog_message(line: &DrainLine) -> String {
    let severity = match line.stream {
        LogStream::Stdout => SEVERITY_STDOUT,
        LogStream::Stderr => SEVERITY_STDERR,
    };
    let pri = FACILITY * 8 + severity;
    let host = header_field(&format!("{}.{}", line.env, line.app), 255);
    let app_name = header_field(line.source.as_str(), 48);
    let procid = header_field(&format!("{}.{}", line.process, line.replica), 128);
    // A line ends where the store says it does: a trailing newline would be a second, empty
    // line to some receivers.
    let text = line.text.trim_end_matches(['\n', '\r']);
    format!("<{pri}>1 {} {host} {app_name} {procid} - - {text}", timestamp(line.at))
}

/// Appends `message` in octet-counting framing: its length in bytes, a space, the message.
pub fn frame(message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{} ", message.len()).as_bytes());
    out.extend_from_slice(message.as_bytes());
}

/// Every line framed, for one write to a syslog drain.
pub fn syslog_frames(lines: &[DrainLine]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        frame(&syslog_message(line), &mut out);
    }
    out
}

/// One line as a JSON object (no newline).
pub fn json_line(line: &DrainLine) -> String {
    serde_json::json!({
        "at": crate::logs::store::format_time(line.at),
        "app": line.app,
        "env": line.env,
        "source": line.source,
        "process": line.process,
        "replica": line.replica,
        "release": line.release,
        "node": line.node,
        "stream": line.stream,
        "text": line.text,
    })
    .to_string()
}

/// The body of the next HTTPS request: JSON lines for the longest prefix of `lines` within
/// `max_lines` and `max_bytes` (at least one line), and how many lines it holds.
pub fn json_batch(lines: &[DrainLine], max_lines: usize, max_bytes: usize) -> (usize, Vec<u8>) {
    let mut body = Vec::new();
    let mut n = 0;
    for line in lines.iter().take(max_lines) {
        let json = json_line(line);
        if n > 0 && body.len() + json.len() + 1 > max_bytes {
            break;
        }
        body.extend_from_slice(json.as_bytes());
        body.push(b'\n');
        n += 1;
    }
    (n, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> DrainLine {
        DrainLine {
            id: 7,
            // 2026-11-27T10:00:01.123456789Z
            at: 1_795_773_601_123_456_789,
            app: "shop".into(),
            env: "production".into(),
            source: LogSource::App,
            process: "web".into(),
            replica: 2,
            release: 3,
            node: "n1".into(),
            stream: LogStream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn syslog_messages_carry_app_env_source_and_process_in_the_header() {
        let m = syslog_message(&line("hello wörld"));
        assert_eq!(m, "<14>1 2026-11-27T10:00:01.123456Z production.shop app web.2 - - hello wörld");
        let err = syslog_message(&DrainLine { stream: LogStream::Stderr, ..line("oops\n") });
        assert!(err.starts_with("<12>1 ") && err.ends_with(" - - oops"), "{err}");
    }

    #[test]
    fn header_fields_hold_only_printable_ascii_within_their_length() {
        assert_eq!(header_field("web worker\tä", 48), "web_worker__");
        assert_eq!(header_field("", 48), "-");
        assert_eq!(header_field(&"p".repeat(200), 128).len(), 128);
        let odd = DrainLine { process: "we b".into(), ..line("x") };
        let m = syslog_message(&odd);
        assert_eq!(m.split(' ').nth(4), Some("we_b.2"), "{m}");
    }

    #[test]
    fn octet_counting_counts_bytes_not_characters() {
        let mut out = Vec::new();
        frame("ä b", &mut out);
        frame("c", &mut out);
        assert_eq!(out, "4 ä b1 c".as_bytes());
        let frames = syslog_frames(&[line("a"), line("b")]);
        let text = String::from_utf8(frames).unwrap();
        let first = syslog_message(&line("a"));
        assert!(text.starts_with(&format!("{} {first}", first.len())), "{text}");
    }

    #[test]
    fn json_lines_have_every_field_and_batches_are_cut_by_lines_and_bytes() {
        let v: serde_json::Value = serde_json::from_str(&json_line(&line("say \"hi\""))).unwrap();
        assert_eq!(v["at"], "2026-11-27T10:00:01.123456789Z");
        assert_eq!(
            (v["app"].as_str(), v["env"].as_str(), v["source"].as_str()),
            (Some("shop"), Some("production"), Some("app"))
        );
        assert_eq!(
            (v["process"].as_str(), v["replica"].as_u64(), v["release"].as_u64()),
            (Some("web"), Some(2), Some(3))
        );
        assert_eq!(
            (v["node"].as_str(), v["stream"].as_str(), v["text"].as_str()),
            (Some("n1"), Some("stdout"), Some("say \"hi\""))
        );

        let lines: Vec<DrainLine> = (0..10).map(|i| line(&format!("line {i}"))).collect();
        let (n, body) = json_batch(&lines, 4, MAX_BATCH_BYTES);
        assert_eq!(n, 4);
        assert_eq!(body.iter().filter(|b| **b == b'\n').count(), 4);
        let one = json_line(&lines[0]).len() + 1;
        let (n, body) = json_batch(&lines, 100, one * 3 + 1);
        assert_eq!((n, body.len()), (3, one * 3));
        // A line larger than the budget still goes, alone.
        let (n, _) = json_batch(&lines, 100, 10);
        assert_eq!(n, 1);
        assert_eq!(json_batch(&[], 100, 10).0, 0);
    }
}
