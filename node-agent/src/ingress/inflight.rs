//! Counts requests in flight per backend, so a retiring replica is stopped only once the
//! requests the ingress sent it have finished (or its drain timeout ran out).

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

#[derive(Default)]
pub(crate) struct InFlight {
    counts: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// One request (or upgraded tunnel) to a backend; the count drops when this does.
pub(crate) struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    pub(crate) fn enter(&self, backend: &str) -> Guard {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let counter = counts.entry(backend.to_string()).or_default().clone();
        counter.fetch_add(1, Ordering::AcqRel);
        Guard(counter)
    }

    pub(crate) fn get(&self, backend: &str) -> usize {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.get(backend).map_or(0, |c| c.load(Ordering::Acquire));
        if n == 0 {
            // Forget idle backends so the map does not grow with every replica ever seen.
            counts.remove(backend);
        }
        n
    }
}

/// A response body that holds its request's in-flight guard (or concurrency slot) until the body
/// is fully sent (or the client goes away), so long and streamed responses count until they end.
pub(crate) struct GuardedBody<B, G = Guard> {
    pub(crate) inner: B,
    pub(crate) guard: Option<G>,
}

impl<B: Body<Data = Bytes> + Unpin, G: Unpin> Body for GuardedBody<B, G> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
