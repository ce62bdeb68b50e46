//! Socket sources against whatever namespace the bench runs in; run by
//! `scripts/bench-sockets.sh` once in an empty namespace and once with 50,000 TIME_WAIT
//! sockets. Figures in docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use netpressure_exporter::config::Config;
use netpressure_exporter::snapshot::Snapshot;
use netpressure_exporter::source::listeners::Listeners;
use netpressure_exporter::source::netstat::Netstat;
use netpressure_exporter::source::remotes::Remotes;
use netpressure_exporter::source::{NsContext, Source};

fn sockets(c: &mut Criterion) {
    // The per-sample LISTEN dump (the SYN_RECV scan is a source of the slow lane).
    let cfg = Config::from_args(["bench", "--scan.interval=10m"]).unwrap();
    let ctx = NsContext::read_here(&cfg).unwrap();
    let mut listeners = Listeners::new(&cfg, &ctx);
    let mut snap = Snapshot::new();
    c.bench_function("listeners/sample", |b| {
        b.iter(|| {
            snap.clear();
            listeners.sample(&mut snap).unwrap();
        })
    });
    let mut remotes = Remotes::new(&cfg, &ctx);
    c.bench_function("remotes/scan", |b| b.iter(|| remotes.scan().unwrap()));
    let mut netstat = Netstat::new(&cfg, &ctx);
    c.bench_function("netstat/sample", |b| {
        b.iter(|| {
            snap.clear();
            netstat.sample(&mut snap).unwrap();
        })
    });
}

criterion_group!(benches, sockets);
criterion_main!(benches);
