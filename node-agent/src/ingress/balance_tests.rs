//! Tests of balancing over real sockets on 127.0.0.1: requests go to the replica with the fewest
//! in flight, and a replica that keeps failing is ejected while requests go on being answered.

use super::balance::EJECT_AFTER;
use super::tests::{get, named_backend, route, spawn_backend, start_ingress, text};
use super::*;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio::sync::Notify;

#[tokio::test]
async fn requests_go_to_the_replica_with_the_fewest_in_flight() {
    let release = Arc::new(Notify::new());
    let held = release.clone();
    let slow = spawn_backend(move |_req: Request<Incoming>| {
        let held = held.clone();
        async move {
            held.notified().await;
            text("slow")
        }
    })
    .await;
    let fast = named_backend("fast").await;
    let (ingress, handle, shutdown) = start_ingress(&[route("app.test", &[slow, fast])]).await;
    // The first request starts the rotation at the slow replica, which holds it.
    let first = tokio::spawn(get(ingress, "app.test"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handle.in_flight(&slow.to_string()) == 0 {
        assert!(std::time::Instant::now() < deadline, "the first request never reached the slow replica");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Round robin would send every other one to the busy replica; none goes there.
    for _ in 0..6 {
        let (status, body) = get(ingress, "app.test").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "fast"));
    }
    release.notify_one();
    assert_eq!(first.await.unwrap(), (StatusCode::OK, "slow".to_string()));
    shutdown.cancel();
}

#[tokio::test]
async fn a_replica_that_keeps_failing_is_ejected_and_requests_are_still_answered() {
    // Accepts connections and closes them at once: every exchange breaks.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broken = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let good = named_backend("good").await;
    let (ingress, handle, shutdown) = start_ingress(&[route("app.test", &[broken, good])]).await;
    for _ in 0..10 {
        let (status, body) = get(ingress, "app.test").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "good"));
    }
    assert!(handle.health.is_ejected(&broken.to_string()), "the broken replica was not ejected");
    let tried = accepted.load(Ordering::SeqCst);
    assert!(tried >= EJECT_AFTER as usize, "the broken replica was tried {tried} times");
    // Ejected: no request waits on it any more.
    for _ in 0..10 {
        let (status, _) = get(ingress, "app.test").await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), tried, "an ejected replica was tried");
    shutdown.cancel();
}
