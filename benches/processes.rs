//! One full process scan (open descriptors and RLIMIT_NOFILE of every process, top-K)
//! with 2,000 extra processes running. `cargo bench --bench processes`; figures in
//! docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};

use criterion::{criterion_group, criterion_main, Criterion};
use netpressure_exporter::config::Config;
use netpressure_exporter::snapshot::Snapshot;
use netpressure_exporter::source::processes::Processes;
use netpressure_exporter::source::Source;

const EXTRA: usize = 2000;

fn scan(c: &mut Criterion) {
    let mut children: Vec<Child> = (0..EXTRA)
        .map(|_| {
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let cfg = Config::default();
    let mut procs = Processes::new(&cfg);
    let mut snap = Snapshot::new();
    procs.sample(&mut snap).unwrap();
    let scanned = snap.value("netpressure_processes_scanned", "").unwrap();
    assert!(scanned >= EXTRA as f64, "scanned {scanned}");
    eprintln!("processes with open descriptors: {scanned}");
    // Limits by prlimit(2): the bench runs as root, as the processes do.
    c.bench_function("processes/full_scan_2000_extra", |b| {
        b.iter(|| {
            snap.clear();
            procs.sample(&mut snap).unwrap();
        })
    });
    // Limits from /proc/PID/limits, as for other users' processes without
    // CAP_SYS_RESOURCE.
    let mut from_file = Processes::new(&cfg).without_prlimit();
    c.bench_function("processes/full_scan_2000_extra_limits_file", |b| {
        b.iter(|| {
            snap.clear();
            from_file.sample(&mut snap).unwrap();
        })
    });
    for child in &mut children {
        let _ = child.kill();
    }
    for child in &mut children {
        let _ = child.wait();
    }
}

criterion_group!(benches, scan);
criterion_main!(benches);
