//! Benchmark: a code-only redeploy of examples/notes, whole (`paas deploy` from the upload to the
//! new release live, its build, release command and stability window included), on platforms
//! run by each of the paas binaries given, deploying alternately in the same run. Made to show
//! what the build labels cost: give the binary from before they went into one LABEL line and the
//! current one. Prints each binary's median and the ratio to the first.
//!
//! Run: `cargo run -p paas-tests --bin bench-redeploy -- ROUNDS BIN [BIN...]`.

use paas_tests::Platform;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).expect("ROUNDS BIN [BIN...]");
    let bins: Vec<PathBuf> = args.map(PathBuf::from).collect();
    assert!(!bins.is_empty(), "give at least one paas binary");
    let src = paas_tests::example_copy("notes");
    let dir = src.path().to_str().unwrap().to_string();
    let mut platforms = Vec::new();
    for bin in &bins {
        let mut p = Platform::start_from(bin, &[], &[]);
        let app = p.app_name("notes");
        p.paas(&["apps", "create", &app]).expect_ok();
        p.paas(&["db", "create", "--app", &app, "--replicas", "0"]).expect_ok();
        // The first deploy builds the apt layer; later ones change only the app's code.
        p.paas(&["deploy", &dir, "--app", &app]).expect_ok();
        platforms.push((p, app, Vec::new()));
    }
    for round in 0..rounds {
        for (i, (p, app, times)) in platforms.iter_mut().enumerate() {
            let code = src.path().join("app.py");
            let mut text = std::fs::read_to_string(&code).unwrap();
            text.push_str(&format!("# round {round} of binary {i}\n"));
            std::fs::write(&code, text).unwrap();
            let t = Instant::now();
            p.paas(&["deploy", &dir, "--app", app]).expect_ok();
            times.push(t.elapsed());
            eprintln!("round {}: {} {:.2} s", round + 1, bins[i].display(), t.elapsed().as_secs_f64());
        }
    }
    println!("code-only redeploy of examples/notes (paas deploy, whole), median of {rounds}:");
    let first = median(platforms[0].2.clone()).as_secs_f64();
    for (bin, (_, _, times)) in bins.iter().zip(&platforms) {
        let m = median(times.clone()).as_secs_f64();
        println!("  {}: {m:.2} s ({:.2}x the first)", bin.display(), m / first);
    }
}
