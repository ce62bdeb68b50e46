//! The node pass (`bpf/node_pass.bpf.c`, `src/source/pass.rs`): the other namespaces'
//! conntrack counts and listeners read in one BPF run, checked against the kernel's own
//! tools in a namespace the test fills, and against the per-namespace path
//! (`--no-netns.node-pass`) on the same namespace.
//!
//! The exporters run in namespaces of their own and find the test's "pod" namespace as
//! they find pods. The scans are pushed out to 10 minutes, so that the SYN queues can
//! only have come from the pass (the per-namespace path reads them in a scan).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{metric, scrape_until, Exporter, Flows, Killed, Netns};

const SLOW_SCANS: &[&str] = &[
    "--netns.interval=1s",
    "--netns.scan-interval=10m",
    "--scan.interval=10m",
];

/// Listeners the test holds in `ns` (by a Python process, for SO_REUSEPORT and IPv6):
/// 127.0.0.1:7401 with backlog 4 and 3 connections waiting; [::1]:7402 with backlog 64
/// and 5 connections half open (their final ACKs dropped by a rule: request sockets in
/// its SYN queue); three SO_REUSEPORT sockets on 0.0.0.0:7403. Returns once the
/// process says all are in place.
fn listeners(ns: &Netns) -> Killed {
    ns.sh(
        "nft add table inet npsyn && nft add chain inet npsyn out '{ type filter hook output priority 0; }' \
         && nft add rule inet npsyn out tcp dport 7402 'tcp flags & (syn | ack) == ack' drop",
    );
    let script = r#"
import socket, sys, time
held = []
a = socket.socket(); a.bind(("127.0.0.1", 7401)); a.listen(4); held.append(a)
for _ in range(3):
    c = socket.create_connection(("127.0.0.1", 7401)); held.append(c)
b = socket.socket(socket.AF_INET6); b.bind(("::1", 7402)); b.listen(64); held.append(b)
for _ in range(5):
    c = socket.socket(socket.AF_INET6); c.settimeout(2); c.connect(("::1", 7402)); held.append(c)
for _ in range(3):
    r = socket.socket(); r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    r.bind(("0.0.0.0", 7403)); r.listen(16); held.append(r)
print("ready", flush=True)
sys.stdin.read()
"#;
    let mut child = ns
        .cmd("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the listeners' process did not start");
    Killed(child)
}

/// The kernel's own count of `ns`'s TIME_WAIT sockets (sockstat's `tw`).
fn pod_tw(ns: &Netns) -> f64 {
    let out = ns.sh("awk '/^TCP:/ { for (i = 2; i < NF; i++) if ($i == \"tw\") print $(i + 1) }' /proc/net/sockstat");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The kernel's own count of `ns`'s request sockets for a local port (`ss`).
fn ss_syn_recv(ns: &Netns, port: u16) -> f64 {
    let out = ns.sh(&format!("ss -Htn state syn-recv sport = :{port} | wc -l"));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn one_pass_serves_every_namespace_as_the_kernel_counts_it() {
    let pod = Netns::with_conntrack("passpod");
    let _flows = Flows::open(&pod, 8080, 20, Duration::from_secs(2));
    pod.sh("sysctl -qw net.ipv4.tcp_tw_reuse=0");
    pod.enter(|| common::client_closed_connections(7404, 30));
    let _held = listeners(&pod);
    assert_eq!(ss_syn_recv(&pod, 7402), 5.0, "five request sockets in the SYN queue");

    let home = Netns::new("passhome");
    let exp = Exporter::start(&home, SLOW_SCANS);
    let used = |b: &str, field: &str| metric(b, "netpressure_node_pass_used", &format!(r#"field="{field}""#));
    let v6 = pod.label(r#"address="::1",port="7402""#);
    let v4 = pod.label(r#"address="127.0.0.1",port="7401""#);
    let group = pod.label(r#"address="0.0.0.0",port="7403""#);
    let body = scrape_until(&exp, "the pass in use and the pod's listeners served", |b| {
        used(b, "conntrack") == Some(1.0)
            && used(b, "listeners") == Some(1.0)
            && used(b, "time_wait") == Some(1.0)
            && metric(b, "netpressure_tcp_time_wait_sockets", &pod.label("")) == Some(pod_tw(&pod))
            && metric(b, "netpressure_tcp_syn_recv_sockets", &v6).is_some()
            && metric(b, "netpressure_conntrack_entries", &pod.label("")) == Some(pod.conntrack_count() as f64)
    });
    assert_eq!(metric(&body, "netpressure_node_pass_up", ""), Some(1.0));
    assert!(pod_tw(&pod) >= 20.0, "the pod's TIME_WAIT sockets are there");
    // The SYN queue, exact against ss, with no SYN_RECV scan run in ten minutes.
    assert_eq!(
        metric(&body, "netpressure_tcp_syn_recv_sockets", &v6),
        Some(ss_syn_recv(&pod, 7402))
    );
    assert_eq!(metric(&body, "netpressure_tcp_listen_queue_length", &v4), Some(3.0));
    assert_eq!(metric(&body, "netpressure_tcp_listen_queue_limit", &v4), Some(4.0));
    assert_eq!(metric(&body, "netpressure_tcp_listen_queue_limit", &v6), Some(64.0));
    assert_eq!(metric(&body, "netpressure_tcp_listen_sockets", &group), Some(3.0));
    // The three above and the flows' own listener on 8080.
    assert_eq!(metric(&body, "netpressure_tcp_listeners", &pod.label("")), Some(4.0));
    assert!(metric(&body, "netpressure_node_pass_namespaces", "").unwrap() >= 2.0);
    assert!(metric(&body, "netpressure_node_pass_runs_total", "").unwrap() >= 1.0);
    assert_eq!(metric(&body, "netpressure_node_pass_errors_total", ""), Some(0.0));
    // The per-namespace requests are gone: the pod's conntrack and listeners sources
    // ran without entering it after their first samples.
    let entered = metric(&body, "netpressure_netns_entered_total", "").unwrap();
    let later = scrape_until(&exp, "three more rounds of other namespaces", |b| {
        metric(b, "netpressure_netns_samples_total", "").unwrap()
            >= metric(&body, "netpressure_netns_samples_total", "").unwrap() + 3.0
    });
    assert_eq!(metric(&later, "netpressure_netns_entered_total", ""), Some(entered));

    // The same namespace read per namespace: the same values (the SYN queue waits for
    // its scan there, due at the first round).
    let home2 = Netns::new("passoff");
    let off = Exporter::start(&home2, &[SLOW_SCANS, &["--no-netns.node-pass"]].concat());
    let body = scrape_until(&off, "the pod's listeners read per namespace", |b| {
        metric(b, "netpressure_tcp_listen_queue_length", &v4).is_some()
            && metric(b, "netpressure_tcp_syn_recv_sockets", &v6).is_some()
    });
    assert_eq!(metric(&body, "netpressure_node_pass_up", ""), Some(0.0));
    assert_eq!(
        metric(&body, "netpressure_node_pass_used", r#"field="conntrack""#),
        None
    );
    assert_eq!(
        metric(&body, "netpressure_tcp_syn_recv_sockets", &v6),
        Some(ss_syn_recv(&pod, 7402))
    );
    assert_eq!(metric(&body, "netpressure_tcp_listen_queue_length", &v4), Some(3.0));
    assert_eq!(metric(&body, "netpressure_tcp_listen_sockets", &group), Some(3.0));
    scrape_until(&off, "the pod's TIME_WAIT read per namespace as sockstat says", |b| {
        metric(b, "netpressure_tcp_time_wait_sockets", &pod.label("")) == Some(pod_tw(&pod))
    });
}
