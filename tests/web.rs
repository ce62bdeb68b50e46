//! The HTTP endpoint under hostile clients: it must not be starved, bloated or kept
//! from shutting down. Real sockets against the real binary, in a namespace of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{metric, Exporter, Netns, PORT};

/// Raises this test process's soft descriptor limit to its hard one (the test holds
/// over a thousand sockets).
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a valid struct for this process.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        rl.rlim_cur = rl.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
    }
}

fn connect_all(ns: &Netns, n: usize) -> Vec<TcpStream> {
    ns.enter(move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
        (0..n)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
            .collect()
    })
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn idle_and_slow_clients_cannot_starve_scrapes_or_hold_the_exit() {
    raise_nofile();
    let ns = Netns::new("starve");
    let exp = Exporter::start(&ns, &["--no-collector.netns"]);
    // 1,000 connections that never send a byte, then 200 that send their headers one
    // byte every half second for 30 s, well past the header timeout.
    let _idle = connect_all(&ns, 1000);
    let mut slow = connect_all(&ns, 200);
    let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut scrapes = 0;
    for i in 0..60 {
        for s in &mut slow {
            let _ = s.write_all(&request[i % request.len()..=i % request.len()]);
        }
        // Scrapes from another client are answered all along.
        let t = Instant::now();
        let body = exp.scrape();
        worst = worst.max(t.elapsed());
        scrapes += 1;
        assert!(metric(&body, "netpressure_source_up", r#"source="sockstat""#) == Some(1.0));
        std::thread::sleep(Duration::from_millis(500));
    }
    let body = exp.scrape();
    eprintln!(
        "{scrapes} scrapes over {:?} beside 1,200 hostile connections; the slowest took {worst:?}",
        started.elapsed()
    );
    assert_eq!(metric(&body, "netpressure_sampler_overruns_total", ""), Some(0.0));
    // Room was made by closing the hostile connections, never more than the cap held.
    assert!(metric(&body, "netpressure_http_connections_evicted_total", "").unwrap() >= 1000.0);
    assert!(metric(&body, "netpressure_http_connections", "").unwrap() <= 64.0);
    // The connections held stay under the cap (64) plus the exporter's own files.
    let fds = open_fds(exp.pid());
    assert!(fds < 64 + 64, "{fds} descriptors");
    // SIGTERM ends it within the grace period, whatever the clients do.
    let t = Instant::now();
    let (code, log) = exp.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(t.elapsed() < Duration::from_secs(5), "shutdown took {:?}", t.elapsed());
}

#[test]
fn at_1024_descriptors_1500_idle_connections_do_not_black_out_metrics() {
    raise_nofile();
    let ns = Netns::new("fdcap");
    // The soft and hard limit both 1024 (systemd's default soft limit): the exporter
    // cannot raise it.
    let mut cmd = ns.cmd("prlimit");
    cmd.args(["--nofile=1024:1024", common::EXPORTER]).args([
        "--web.listen-address",
        &format!("127.0.0.1:{PORT}"),
        "--no-collector.netns",
    ]);
    let exp = Exporter::start_cmd(&mut cmd);
    let idle = connect_all(&ns, 1500);
    assert!(idle.len() >= 1500, "{} connected", idle.len());
    // Another client is answered, and so are the probes; the self-metrics (from the
    // sampler's next snapshot) show room was made by closing the idle ones.
    let body = common::scrape_until(&exp, "the idle connections evicted", |b| {
        metric(b, "netpressure_http_connections_evicted_total", "").unwrap_or(0.0) >= 1400.0
    });
    assert_eq!(metric(&body, "process_max_fds", ""), Some(1024.0));
    assert_eq!(exp.get("/-/healthy").unwrap().status, 200);
}

#[test]
fn clients_that_never_read_cannot_grow_memory() {
    raise_nofile();
    let ns = Netns::new("noread");
    let exp = Exporter::start(&ns, &["--no-collector.netns"]);
    let before = rss_bytes(exp.pid());
    for _round in 0..2 {
        let mut clients = connect_all(&ns, 2000);
        for c in &mut clients {
            let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        // Evidence that the exporter has taken the requests in: a scrape of our own
        // comes after them in its accept queue.
        let body = exp.scrape();
        assert!(body.contains("netpressure_build_info"));
        let during = rss_bytes(exp.pid());
        assert!(during < 32 << 20, "RSS {during} with 2,000 clients that never read");
        drop(clients);
    }
    let after = rss_bytes(exp.pid());
    eprintln!("RSS: {before} before, {after} after two rounds of 2,000 clients that never read");
    assert!(after < 32 << 20, "RSS {after}");
    assert_eq!(exp.get("/-/healthy").unwrap().status, 200);
}

#[test]
fn sighup_without_a_web_config_is_logged_and_the_exporter_goes_on() {
    let ns = Netns::new("sighup");
    let exp = Exporter::start(&ns, &["--no-collector.netns"]);
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(exp.pid() as i32, libc::SIGHUP) };
    // Still serving after the signal (a scrape answered with a newer snapshot).
    let first = exp.scrape();
    let taken = |b: &str| metric(b, "netpressure_last_sample_timestamp_seconds", "");
    common::scrape_until(&exp, "a newer snapshot", |b| taken(b) > taken(&first));
    let (code, log) = exp.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGHUP: no --web.config.file to re-read"), "{log}");
}

#[test]
fn sixty_four_wrk_connections_get_answers_or_documented_503s() {
    let ns = Netns::new("wrk");
    let exp = Exporter::start(&ns, &["--no-collector.netns", "--web.max-requests=8"]);
    let idle = rss_bytes(exp.pid());
    let out = ns
        .cmd("wrk")
        .args(["-t2", "-c64", "-d20s", "--timeout", "5s"])
        .arg(format!("http://127.0.0.1:{PORT}/metrics"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    // Connection errors (connect, read, write, timeout) are failures; 503s above
    // --web.max-requests are the documented answer, counted by the exporter.
    assert!(!text.contains("Socket errors"), "{text}");
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap();
    let non_2xx: f64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map_or(0.0, |n| n.trim().parse().unwrap());
    let body = exp.scrape();
    let rejected = metric(&body, "netpressure_http_requests_rejected_total", "").unwrap();
    assert!(requests > 1000.0, "{requests} requests");
    assert_eq!(non_2xx, rejected, "every non-2xx answer is a counted 503");
    // The memory the run took comes back (within 8 MiB of idle).
    let after = rss_bytes(exp.pid());
    eprintln!("RSS: {idle} idle, {after} after {requests} requests ({rejected} 503s)");
    assert!(after < idle + (8 << 20), "RSS {after} after, {idle} idle");
}
