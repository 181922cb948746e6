//! A build context's `Dockerfile` gets the image's labels as one `LABEL` line at its end, instead
//! of the build API's `labels`: Docker 20.10's legacy builder turns each API label into a step
//! of its own, one layer commit each (measured on examples/notes: five labels made a code-only
//! rebuild 11.6 s instead of 6.4 s with one line; see BENCHMARKS.md). The last line wins over
//! any `paas.*` label the Dockerfile sets itself. No crate does this rewrite; `tar` and `flate2`
//! do the reading and writing.

use anyhow::Context;
use std::collections::HashMap;
use std::io::Read;

/// The context (a tar, gzipped or not) as a plain tar whose top-level `Dockerfile` ends with a
/// `LABEL` line carrying `labels`. Entries keep their names, modes, times and link targets.
/// `None` when there is no such regular file (a symlink, say): then the API's labels do it.
pub fn with_labels(context: &[u8], labels: &HashMap<String, String>) -> anyhow::Result<Option<Vec<u8>>> {
    let reader: Box<dyn Read + '_> = if context.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(context))
    } else {
        Box::new(context)
    };
    let mut archive = tar::Archive::new(reader);
    let mut out = tar::Builder::new(Vec::with_capacity(context.len() * 2));
    out.mode(tar::HeaderMode::Complete);
    let bad = "the uploaded source is not a readable tar archive";
    let mut labelled = false;
    for entry in archive.entries().context(bad)? {
        let mut entry = entry.context(bad)?;
        let path = entry.path().context(bad)?.into_owned();
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name().context(bad)?.unwrap_or_default().into_owned();
            out.append_link(&mut header, &path, &target)?;
        } else if kind.is_file() && is_dockerfile(&path) {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).context(bad)?;
            if !text.is_empty() && !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.extend_from_slice(label_line(labels).as_bytes());
            labelled = true;
            header.set_size(text.len() as u64);
            out.append_data(&mut header, &path, text.as_slice())?;
        } else {
            out.append_data(&mut header, &path, &mut entry)?;
        }
    }
    Ok(labelled.then_some(out.into_inner()?))
}

fn is_dockerfile(path: &std::path::Path) -> bool {
    let mut parts = path.components().filter(|c| !matches!(c, std::path::Component::CurDir));
    parts.next().is_some_and(|c| c.as_os_str() == "Dockerfile") && parts.next().is_none()
}

/// `LABEL "k"="v" ...`, sorted, each key and value quoted as a JSON string (which a Dockerfile
/// reads the same way for the characters labels hold).
fn label_line(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = labels.iter().collect();
    pairs.sort();
    let quoted: Vec<String> =
        pairs.iter().map(|(k, v)| format!("{}={}", serde_json::json!(k), serde_json::json!(v))).collect();
    format!("LABEL {}\n", quoted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])], link: Option<(&str, &str)>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        if let Some((name, target)) = link {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, name, target).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_all(tar: &[u8]) -> Vec<(String, Vec<u8>, Option<String>)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let link = e.link_name().unwrap().map(|l| l.display().to_string());
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data, link)
            })
            .collect()
    }

    #[test]
    fn the_dockerfile_alone_gets_one_label_line_and_everything_else_is_kept() {
        let long = format!("deep/{}/file.txt", "d".repeat(150));
        let files: Vec<(&str, &[u8])> = vec![
            ("Dockerfile", b"FROM debian:bookworm-slim\nCOPY . ."),
            ("sub/Dockerfile", b"FROM scratch\n"),
            (&long, b"long name"),
        ];
        let labels = HashMap::from([
            ("paas.app".to_string(), "shop".to_string()),
            ("paas.release".to_string(), "7".to_string()),
        ]);
        for context in [tar_of(&files, Some(("link", "../../etc/passwd"))), gzip(&tar_of(&files, None))] {
            let out = read_all(&with_labels(&context, &labels).unwrap().unwrap());
            let docker = &out[0];
            assert_eq!(docker.0, "Dockerfile");
            assert_eq!(
                String::from_utf8_lossy(&docker.1),
                "FROM debian:bookworm-slim\nCOPY . .\nLABEL \"paas.app\"=\"shop\" \"paas.release\"=\"7\"\n"
            );
            assert_eq!(out[1].1, b"FROM scratch\n", "only the top-level Dockerfile changes");
            assert_eq!((out[2].0.as_str(), out[2].1.as_slice()), (long.as_str(), &b"long name"[..]));
            if let Some(link) = out.get(3) {
                assert_eq!(link.2.as_deref(), Some("../../etc/passwd"), "a link is copied, not followed");
            }
        }
        let linked = tar_of(&[("docker/prod", b"FROM scratch\n")], Some(("Dockerfile", "docker/prod")));
        assert!(with_labels(&linked, &labels).unwrap().is_none(), "a linked Dockerfile is left to the API");
        assert!(with_labels(&gzip(b"not a tar"), &labels).is_err());
    }
}
