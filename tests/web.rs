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
        // comes after them in its accept queue (and may meet --web.max-requests, 503,
        // while theirs are encoded).
        let body = loop {
            let r = exp.get("/metrics").unwrap();
            if r.status == 200 {
                break String::from_utf8(r.body).unwrap();
            }
            assert_eq!(r.status, 503);
            std::thread::sleep(Duration::from_millis(20));
        };
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
    // One scrape encoded at a time, so that 64 clients must meet the limit.
    let exp = Exporter::start(&ns, &["--no-collector.netns", "--web.max-requests=1"]);
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
    // The counter as of a snapshot taken after wrk stopped.
    let body = common::scrape_until(&exp, "the 503s counted", |b| {
        metric(b, "netpressure_http_requests_rejected_total", "").unwrap() >= non_2xx
    });
    let rejected = metric(&body, "netpressure_http_requests_rejected_total", "").unwrap();
    assert!(requests > 1000.0, "{requests} requests");
    assert!(rejected > 0.0, "no scrape met --web.max-requests=1 among 64 clients");
    // Every non-2xx answer wrk saw is a counted 503; the exporter may have counted up
    // to one more per connection, answered as wrk stopped reading.
    assert!(
        rejected >= non_2xx && rejected <= non_2xx + 64.0,
        "{non_2xx} non-2xx answers, {rejected} counted 503s"
    );
    // The memory the run took comes back (within 8 MiB of idle).
    let after = rss_bytes(exp.pid());
    eprintln!("RSS: {idle} idle, {after} after {requests} requests ({rejected} 503s)");
    assert!(after < idle + (8 << 20), "RSS {after} after, {idle} idle");
}

/// Sends `GET /metrics` and reads the answer at about `rate` bytes a second; the
/// status, Content-Length and body.
fn read_slowly(mut s: TcpStream, rate: usize) -> (u16, usize, Vec<u8>) {
    use std::io::Read;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let step = rate / 10;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; step];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the scrape was cut after {} bytes: {e}", raw.len()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole header");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    (status, length, raw[split + 4..].to_vec())
}

#[test]
fn a_scrape_being_read_is_never_cut_and_quick_clients_evict_nothing() {
    raise_nofile();
    let ns = Netns::new("inflight");
    // Small socket buffers in this namespace (both ends are in it), so that a scrape
    // stays in flight while its client reads slowly instead of landing whole in the
    // kernel's buffers.
    ns.sh("sysctl -qw net.ipv4.tcp_wmem='4096 4096 8192' net.ipv4.tcp_rmem='4096 4096 8192'");
    let exp = Exporter::start(&ns, &["--no-collector.netns"]);

    // Connect-and-close bursts from 32 clients at once, below the cap of 64.
    ns.enter(|| {
        let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        drop(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    let body = common::scrape_until(&exp, "the bursts' connections retired", |b| {
        metric(b, "netpressure_http_connections", "") <= Some(1.0)
    });
    assert_eq!(
        metric(&body, "netpressure_http_connections_evicted_total", ""),
        Some(0.0),
        "6,400 connections that closed at once, 32 at a time, evicted a live one"
    );

    // A scrape read at 20 KiB/s while connections churn past the cap: 150 that never
    // send a byte, and clients connecting and closing all along.
    let slow = ns.enter(|| TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], PORT))).unwrap());
    let reader = std::thread::spawn(move || read_slowly(slow, 20 * 1024));
    std::thread::sleep(Duration::from_millis(200));
    let idle = connect_all(&ns, 150);
    let churn_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = std::sync::Arc::clone(&churn_stop);
        let name = ns.name.clone();
        std::thread::spawn(move || {
            common::enter(&name, move || {
                let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    drop(TcpStream::connect_timeout(&addr, Duration::from_secs(2)));
                    n += 1;
                }
                n
            })
        })
    };
    let started = Instant::now();
    let (status, length, body) = reader.join().unwrap();
    let took = started.elapsed();
    churn_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let churned = churn.join().unwrap();
    drop(idle);
    assert_eq!(status, 200);
    assert_eq!(body.len(), length, "the body was cut");
    let text = common::checked(String::from_utf8(body).unwrap());
    let after = exp.scrape();
    eprintln!(
        "a {length}-byte scrape read at 20 KiB/s for {took:?} beside 150 idle connections and {churned} \
         connect-and-close clients: {} evicted",
        metric(&after, "netpressure_http_connections_evicted_total", "").unwrap(),
    );
    assert!(text.contains("netpressure_build_info"));
    // The cap was crossed while the scrape was being read.
    assert!(metric(&after, "netpressure_http_connections_evicted_total", "").unwrap() >= 50.0);
    assert!(
        took >= Duration::from_millis(500),
        "read in {took:?}: not slowly enough to matter"
    );
}
