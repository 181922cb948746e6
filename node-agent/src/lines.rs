//! Batching of output lines (build output, job output) on their way to the control plane, so a
//! chatty process does not cost one request per line.

use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

/// Receives lines until the sender is dropped, handing them to `send` in batches: whatever
/// has arrived whenever the channel runs dry, at most 200 lines at a time.
pub async fn ship<F, Fut>(mut rx: mpsc::UnboundedReceiver<String>, send: F)
where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut batch = Vec::new();
    loop {
        let closed = tokio::select! {
            line = rx.recv() => match line {
                Some(l) => { batch.push(l); false }
                None => true,
            },
            _ = tokio::time::sleep(Duration::from_millis(200)), if !batch.is_empty() => false,
        };
        while batch.len() < 200 {
            match rx.try_recv() {
                Ok(l) => batch.push(l),
                Err(_) => break,
            }
        }
        if !batch.is_empty() && (closed || batch.len() >= 50 || rx.is_empty()) {
            send(std::mem::take(&mut batch)).await;
        }
        if closed {
            return;
        }
    }
}
