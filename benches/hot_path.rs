//! The hot path: one host sample (every default source against the running kernel) and
//! one scrape encoding of the resulting snapshot. `cargo bench --bench hot_path`;
//! figures in docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Write as _;

use criterion::{criterion_group, criterion_main, Criterion};
use netpressure_exporter::config::Config;
use netpressure_exporter::sampler::Sampler;

fn host_sample(c: &mut Criterion) {
    // The fast lane at the default settings: each tick runs the gauge sources, every
    // 4th tick the counter sources (and, here, the namespaces the machine has besides
    // the bench's own, every 4th tick at --netns.sample-interval). The mean is the
    // amortised cost of a tick; the slow lane's work is not in it.
    let cfg = Config::default();
    let (mut sampler, _rx) = Sampler::from_config(&cfg);
    sampler.step_all();
    c.bench_function("host_sample/amortised_all_default_sources", |b| {
        b.iter(|| sampler.tick())
    });
    // One round of the slow lane (discovery, sysctls and every scan, as its first round
    // runs them all) and one fast tick: an upper bound of what the slow lane costs a
    // second.
    c.bench_function("slow_lane/round_with_every_scan", |b| {
        b.iter_batched(
            || Sampler::from_config(&cfg),
            |(mut s, _rx)| s.step_all(),
            criterion::BatchSize::PerIteration,
        )
    });

    // What runs on every 250 ms tick: the sources with pressure gauges (the listeners'
    // SYN_RECV scan pushed out of the measurement by a long scan interval).
    let cfg = Config::from_args([
        "bench",
        "--collector.disable-defaults",
        "--collector.conntrack",
        "--collector.sockstat",
        "--collector.listeners",
        "--scan.interval=10m",
        "--no-collector.netns",
    ])
    .unwrap();
    let (mut sampler, _rx) = Sampler::from_config(&cfg);
    c.bench_function("host_sample/every_tick_sources", |b| b.iter(|| sampler.tick()));

    let cfg = Config::from_args([
        "bench",
        "--collector.disable-defaults",
        "--collector.conntrack",
        "--no-collector.netns",
    ])
    .unwrap();
    let (mut sampler, _rx) = Sampler::from_config(&cfg);
    c.bench_function("host_sample/conntrack_only", |b| b.iter(|| sampler.tick()));
}

fn scrape_encode(c: &mut Criterion) {
    let cfg = Config::from_args(["bench", "--collector.conntrack.per-cpu"]).unwrap();
    let (mut sampler, rx) = Sampler::from_config(&cfg);
    sampler.tick();
    let snap = rx.borrow().clone().unwrap();
    c.bench_function("scrape/encode_text", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(snap.encoded_len_hint());
            snap.encode(&mut out);
            black_box(out)
        })
    });
    c.bench_function("scrape/encode_gzip", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(snap.encoded_len_hint());
            snap.encode(&mut out);
            let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(out.len() / 4), flate2::Compression::fast());
            enc.write_all(out.as_bytes()).unwrap();
            black_box(enc.finish().unwrap())
        })
    });
}

criterion_group!(benches, host_sample, scrape_encode);
criterion_main!(benches);
