//! Side by side, in one run and on the same sockets: the remotes source's scan (dump,
//! tally per remote, rank) against `ss -tan state time-wait`, alternately, 10 times
//! each. Run by `scripts/bench-sockets.sh`; prints medians and the socket counts seen.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::process::Command;
use std::time::{Duration, Instant};

use netpressure_exporter::config::Config;
use netpressure_exporter::snapshot::Snapshot;
use netpressure_exporter::source::remotes::Remotes;
use netpressure_exporter::source::Source;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let cfg = Config::from_args(["bench", "--collector.remotes.top=20"]).unwrap();
    let ctx = netpressure_exporter::source::NsContext::read_here(&cfg).unwrap();
    let mut remotes = Remotes::new(&cfg, &ctx);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut ss_lines = 0;
    for _ in 0..10 {
        let t = Instant::now();
        remotes.scan().unwrap();
        ours.push(t.elapsed());
        let t = Instant::now();
        let out = Command::new("ss")
            .args(["-tan", "state", "time-wait"])
            .output()
            .unwrap();
        theirs.push(t.elapsed());
        ss_lines = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() - 1;
    }
    let mut snap = Snapshot::new();
    remotes.sample(&mut snap).unwrap();
    let counted: f64 = snap
        .iter()
        .filter(|(d, l, _)| d.name == "netpressure_tcp_remote_sockets" && l.ends_with("state=\"time_wait\""))
        .map(|(_, _, v)| v)
        .sum();
    println!(
        "remotes scan: median {:.2} ms, {} TIME_WAIT sockets counted in the top remotes",
        median(ours).as_secs_f64() * 1e3,
        counted as u64
    );
    println!(
        "ss -tan state time-wait: median {:.2} ms (process start included), {ss_lines} sockets listed",
        median(theirs).as_secs_f64() * 1e3
    );
}
