//! Socket pressure against the real kernel: accept queues, SYN backlogs, TIME_WAIT and
//! ephemeral ports, each in a network namespace the test creates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{connect_many, listen_reuseport, listen_with_backlog, metric, scrape_until, Exporter, Netns};

fn listener(ns: &Netns, port: u16) -> String {
    ns.label(&format!(r#"address="127.0.0.1",port="{port}""#))
}

#[test]
fn accept_queue_overflow_and_its_peak() {
    const PORT: u16 = 7001;
    let ns = Netns::new("acceptq");
    let exp = Exporter::start(&ns, &[]);
    let (listener_sock, clients) = ns.enter(|| {
        let l = listen_with_backlog(PORT, 4);
        let c = connect_many(PORT, 20, Duration::from_millis(100));
        (l, c)
    });
    assert_eq!(clients.len(), 5, "the accept queue holds backlog + 1");

    let body = scrape_until(&exp, "a full accept queue", |b| {
        metric(b, "netpressure_tcp_listen_queue_length", &listener(&ns, PORT)) == Some(5.0)
    });
    assert_eq!(
        metric(&body, "netpressure_tcp_listen_queue_limit", &listener(&ns, PORT)),
        Some(4.0)
    );
    // Counters are read every --sample.counter-interval (5 s), not every sample.
    let body = scrape_until(&exp, "the overflow counted", |b| {
        metric(b, "netpressure_tcp_listen_overflows_total", &ns.label("")).is_some_and(|n| n > 0.0)
    });
    assert!(metric(&body, "netpressure_tcp_listen_drops_total", &ns.label("")).unwrap() > 0.0);

    listener_sock.set_nonblocking(true).unwrap();
    let mut accepted = Vec::new();
    while let Ok((s, _)) = listener_sock.accept() {
        accepted.push(s);
    }
    assert_eq!(accepted.len(), 5);
    let body = scrape_until(&exp, "an empty accept queue", |b| {
        metric(b, "netpressure_tcp_listen_queue_length", &listener(&ns, PORT)) == Some(0.0)
    });
    assert_eq!(
        metric(&body, "netpressure_tcp_listen_queue_length_peak", &listener(&ns, PORT)),
        Some(5.0)
    );
}

#[test]
fn syn_recv_per_listener_counts_half_open_connections() {
    const PORT: u16 = 7002;
    const CLIENTS: usize = 7;
    let ns = Netns::new("synrecv");
    // Drop the client's final ACK (and anything else it sends to PORT): the server keeps
    // one request socket in SYN_RECV per client while the client thinks it is connected.
    ns.sh(&format!(
        "nft add table inet np && nft add chain inet np out '{{ type filter hook output priority 0; }}' \
         && nft add rule inet np out tcp dport {PORT} 'tcp flags & (syn | ack) == ack' drop"
    ));
    let exp = Exporter::start(&ns, &["--scan.interval=1s"]);
    let (_l, clients) = ns.enter(|| {
        let l = listen_with_backlog(PORT, 128);
        let c = connect_many(PORT, CLIENTS, Duration::from_secs(2));
        (l, c)
    });
    assert_eq!(clients.len(), CLIENTS);
    let body = scrape_until(&exp, "SYN_RECV sockets", |b| {
        metric(b, "netpressure_tcp_syn_recv_sockets", &listener(&ns, PORT)) == Some(CLIENTS as f64)
    });
    assert_eq!(
        metric(&body, "netpressure_tcp_listen_queue_length", &listener(&ns, PORT)),
        Some(0.0)
    );
    assert!(metric(&body, "netpressure_tcp_max_syn_backlog", &ns.label("")).unwrap() > 0.0);
}

#[test]
fn time_wait_per_remote_against_the_local_port_range() {
    const PORT: u16 = 7003;
    const CONNS: usize = 300;
    let ns = Netns::new("timewait");
    // A narrow range makes the ratio meaningful; no TIME_WAIT reuse keeps the count exact.
    ns.sh("sysctl -qw net.ipv4.ip_local_port_range='40000 40999' net.ipv4.tcp_tw_reuse=0");
    let exp = Exporter::start(&ns, &["--scan.interval=1s"]);
    ns.enter(|| common::client_closed_connections(PORT, CONNS));

    // The kernel sometimes retires some of these TIME_WAIT sockets within the first
    // second (seen with plain Python clients and `ss` too: 298 and 284 of 300), so the
    // expected count is what `ss` sees in the namespace, and it must be most of them.
    let ss_count = || {
        let out = ns.sh(&format!("ss -Htan state time-wait dst 127.0.0.1:{PORT} | wc -l"));
        String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap()
    };
    let remote = ns.label(&format!(
        r#"remote_address="127.0.0.1",remote_port="{PORT}",state="time_wait""#
    ));
    let mut expected = 0.0;
    let body = scrape_until(&exp, "TIME_WAIT per remote to match ss", |b| {
        expected = ss_count();
        metric(b, "netpressure_tcp_remote_sockets", &remote) == Some(expected)
    });
    assert!(
        expected >= CONNS as f64 * 0.8,
        "only {expected} of {CONNS} TIME_WAIT sockets:\n{body}"
    );
    // sockstat also counts the exporter's own server-side TIME_WAIT from our scrapes.
    assert!(metric(&body, "netpressure_tcp_time_wait_sockets", &ns.label("")).unwrap() >= expected);
    assert!(metric(&body, "netpressure_tcp_time_wait_sockets_peak", &ns.label("")).unwrap() >= expected);
    let size = metric(&body, "netpressure_local_port_range_size", &ns.label("")).unwrap();
    assert_eq!(size, 1000.0);
    let ratio = metric(&body, "netpressure_tcp_remote_sockets", &remote).unwrap() / size;
    assert_eq!(ratio, expected / 1000.0);
    assert!(ratio >= 0.24);
    assert_eq!(
        metric(
            &body,
            "netpressure_sysctl",
            &ns.label(r#"name="net.ipv4.ip_local_port_range.start""#)
        ),
        Some(40000.0)
    );
}

/// The remotes scan walks the node's whole established hash, so it is skipped while the
/// namespace holds too few sockets for any remote to matter (under 1/8 of the port
/// range); when a storm brings them there, the fast lane wakes the slow lane and the scan
/// runs then, not at its next mark ten minutes later.
#[test]
fn a_time_wait_storm_is_scanned_when_it_starts_not_at_the_next_scan_mark() {
    const PORT: u16 = 7007;
    const CONNS: usize = 300;
    let ns = Netns::new("twstorm");
    ns.sh("sysctl -qw net.ipv4.ip_local_port_range='40000 40999' net.ipv4.tcp_tw_reuse=0");
    let exp = Exporter::start(&ns, &["--scan.interval=10m"]);
    let skipped = ns.label("");
    let body = scrape_until(&exp, "the remotes scan skipped in an idle namespace", |b| {
        metric(b, "netpressure_tcp_remotes_scan_skipped", &skipped) == Some(1.0)
    });
    // (Other namespaces the exporter finds, the node's among them, may have remotes.)
    let own_remotes = format!("netpressure_tcp_remote_sockets{{{skipped},");
    assert!(!body.lines().any(|l| l.starts_with(&own_remotes)), "{body}");
    assert_eq!(
        metric(&body, "netpressure_local_port_range_size", &skipped),
        Some(1000.0)
    );

    ns.enter(|| common::client_closed_connections(PORT, CONNS));
    let remote = ns.label(&format!(
        r#"remote_address="127.0.0.1",remote_port="{PORT}",state="time_wait""#
    ));
    // Within scrape_until's deadline (seconds), where the next scan mark is 10 minutes
    // away: the sockets themselves brought the scan forward.
    let body = scrape_until(&exp, "the storm's remote served", |b| {
        metric(b, "netpressure_tcp_remote_sockets", &remote).is_some_and(|n| n >= 125.0)
    });
    assert_eq!(
        metric(&body, "netpressure_tcp_remotes_scan_skipped", &skipped),
        Some(0.0)
    );
}

/// The SYN_RECV walk (the node's whole established hash) is skipped while its last walk
/// found nothing and fewer segments have arrived since than 1/8 of the smallest
/// listener's backlog (here the exporter's own, 4096: 512 segments); the syn_recv test
/// above shows it walking once SYNs come.
#[test]
fn an_idle_namespace_skips_the_syn_recv_walk() {
    let ns = Netns::new("synidle");
    let exp = Exporter::start(&ns, &["--scan.interval=1s", "--sample.counter-interval=1s"]);
    let runs =
        |b: &str, source: &str| metric(b, "netpressure_samples_total", &format!(r#"source="{source}""#)).unwrap_or(0.0);
    let first = scrape_until(&exp, "counters read and a scan round done", |b| {
        runs(b, "netstat") >= 2.0 && runs(b, "sysctl") >= 2.0
    });
    // Six scan rounds (the sysctl source runs every one): six walks without the
    // evidence. Our own scrapes, ten a second, bring about 120 segments a second, so a
    // walk may come once or twice in that time, plus one already due at the start.
    let body = scrape_until(&exp, "six more scan rounds", |b| {
        runs(b, "sysctl") >= runs(&first, "sysctl") + 6.0
    });
    let walks = runs(&body, "listeners_syn_recv") - runs(&first, "listeners_syn_recv");
    assert!(walks <= 3.0, "{walks} SYN_RECV walks in six idle scan rounds");
}

#[test]
fn listener_cap_keeps_the_fullest_and_counts_the_rest() {
    let ns = Netns::new("cap");
    let exp = Exporter::start(
        &ns,
        &["--collector.listeners.max=3", "--collector.listeners.ports=7101-7110"],
    );
    // Ten listeners; three with connections waiting in their accept queues.
    let fill = [(7103u16, 3usize), (7105, 5), (7108, 1)];
    let _held = ns.enter(move || {
        let listeners: Vec<_> = (7101..=7110).map(|p| listen_with_backlog(p, 8)).collect();
        let clients: Vec<_> = fill
            .iter()
            .flat_map(|(p, n)| connect_many(*p, *n, Duration::from_secs(1)))
            .collect();
        (listeners, clients)
    });
    let body = scrape_until(&exp, "the three fullest listeners", |b| {
        fill.iter()
            .all(|(p, n)| metric(b, "netpressure_tcp_listen_queue_length", &listener(&ns, *p)) == Some(*n as f64))
    });
    let served = body
        .lines()
        .filter(|l| l.starts_with(&format!("netpressure_tcp_listen_queue_length{{{}", ns.label(""))))
        .count();
    assert_eq!(served, 3, "{body}");
    assert_eq!(metric(&body, "netpressure_tcp_listeners", &ns.label("")), Some(10.0));
    assert_eq!(
        metric(&body, "netpressure_tcp_listeners_omitted", &ns.label("")),
        Some(7.0)
    );
}

#[test]
fn ipv6_listeners_come_from_the_same_dump() {
    let ns = Netns::new("v6");
    let exp = Exporter::start(&ns, &[]);
    let _held = ns.enter(|| {
        let l = std::net::TcpListener::bind("[::1]:7400").unwrap();
        let c = TcpStream::connect("[::1]:7400").unwrap();
        (l, c)
    });
    let v6 = ns.label(r#"address="::1",port="7400""#);
    let body = scrape_until(&exp, "the IPv6 listener", |b| {
        metric(b, "netpressure_tcp_listen_queue_length", &v6) == Some(1.0)
    });
    // The exporter's own IPv4 listener is served beside it.
    let own = ns.label(&format!(r#"address="127.0.0.1",port="{}""#, common::PORT));
    assert!(metric(&body, "netpressure_tcp_listen_queue_limit", &own).is_some());
}

#[test]
fn a_reuseport_group_is_one_series_with_its_fullest_socket() {
    let ns = Netns::new("reuseport");
    let exp = Exporter::start(&ns, &[]);
    // Two workers on 127.0.0.1:7600 that never accept: one with backlog 1, one with 100.
    // Twenty connections spread over both by hash; the small one fills (2 = backlog + 1)
    // unless fewer than two of them reach it (odds about 1 in 50,000).
    let _held = ns.enter(|| {
        let small = listen_reuseport(7600, 1);
        let large = listen_reuseport(7600, 100);
        let conns = connect_many(7600, 20, Duration::from_millis(300));
        (small, large, conns)
    });
    let labels = listener(&ns, 7600);
    // Every scrape passes the strict check: two series for one port would fail it.
    let body = scrape_until(&exp, "the group", |b| {
        metric(b, "netpressure_tcp_listen_sockets", &labels) == Some(2.0)
            && metric(b, "netpressure_tcp_listen_queue_length", &labels) == Some(2.0)
    });
    assert_eq!(metric(&body, "netpressure_tcp_listen_queue_limit", &labels), Some(1.0));
    assert_eq!(
        metric(&body, "netpressure_tcp_listen_queue_length_peak", &labels),
        Some(2.0)
    );
    // The group and the exporter's own listener.
    assert_eq!(metric(&body, "netpressure_tcp_listeners", &ns.label("")), Some(2.0));
}
