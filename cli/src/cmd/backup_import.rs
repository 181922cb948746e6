//! Where `paas db import` reads a dump from: a file, standard input, or an http(s) URL this
//! machine downloads. Each is streamed (dumps run to gigabytes) and must start as pg_dump's
//! custom format does, so a wrong file is refused before it is uploaded.

use anyhow::Context;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

/// What every pg_dump custom-format archive starts with.
const MAGIC: &[u8] = b"PGDMP";

type Chunks = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The upload body for `source`, checked to be a custom-format archive.
pub async fn dump_body(source: &str) -> anyhow::Result<reqwest::Body> {
    let chunks: Chunks = if source.starts_with("http://") || source.starts_with("https://") {
        let resp = reqwest::get(source).await.map_err(|e| {
            // The innermost cause says it plainly ("Connection refused", a certificate problem).
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            anyhow::anyhow!("downloading {source} failed: {cause}")
        })?;
        if !resp.status().is_success() {
            anyhow::bail!("downloading {source} failed: the server answered {}", resp.status());
        }
        Box::pin(resp.bytes_stream().map(|c| c.map_err(std::io::Error::other)))
    } else {
        // Standard input by its path: the same streaming file read, whatever feeds it.
        let path = if source == "-" { "/dev/stdin" } else { source };
        let file = tokio::fs::File::open(path).await.with_context(|| format!("cannot read {source}"))?;
        Box::pin(tokio_util::io::ReaderStream::new(file))
    };
    let what = if source == "-" { "standard input" } else { source };
    let (head, rest) = peek(chunks, MAGIC.len()).await.with_context(|| format!("reading {what}"))?;
    if !head.starts_with(MAGIC) {
        anyhow::bail!(
            "{what} is not a pg_dump custom-format archive: make one with `pg_dump -Fc` (a plain SQL file loads with `paas db psql < FILE`)"
        );
    }
    let all = futures_util::stream::iter([Ok(head)]).chain(rest);
    Ok(reqwest::Body::wrap_stream(all))
}

/// Reads until at least `n` bytes (or the end) have arrived: those bytes, and the rest.
async fn peek(mut chunks: Chunks, n: usize) -> std::io::Result<(Bytes, Chunks)> {
    let mut head = Vec::new();
    while head.len() < n {
        match chunks.next().await {
            Some(chunk) => head.extend_from_slice(&chunk?),
            None => break,
        }
    }
    Ok((Bytes::from(head), chunks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        let items: Vec<std::io::Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn the_head_is_read_across_chunks_and_nothing_is_lost() {
        let (head, rest) = peek(chunks(&[b"PG", b"DM", b"P\x01", b"tail"]), 5).await.unwrap();
        assert_eq!(&head[..], b"PGDMP\x01");
        let rest: Vec<_> = rest.map(|c| c.unwrap()).collect().await;
        assert_eq!(rest, vec![Bytes::from_static(b"tail")]);
        let (head, _) = peek(chunks(&[b"PG"]), 5).await.unwrap();
        assert_eq!(&head[..], b"PG");
    }

    #[tokio::test]
    async fn a_file_that_is_no_archive_is_refused_before_upload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.sql");
        std::fs::write(&path, "CREATE TABLE t (n int);\n").unwrap();
        let e = dump_body(path.to_str().unwrap()).await.unwrap_err();
        assert!(format!("{e:#}").contains("is not a pg_dump custom-format archive"), "{e:#}");
        let e = dump_body("/nonexistent/x.dump").await.unwrap_err();
        assert!(format!("{e:#}").starts_with("cannot read /nonexistent/x.dump"), "{e:#}");
    }
}
