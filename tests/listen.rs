//! Where the endpoint listens: several `--web.listen-address` at once, and the sockets
//! systemd passes (`--web.systemd-socket`), with systemd-socket-activate standing in for
//! a `.socket` unit (the one in deploy/systemd, which the .deb ships).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{http_exchange, Exporter, Netns, EXPORTER, PORT};

/// One GET from inside `ns` to `addr`.
fn get_at(ns: &Netns, addr: SocketAddr, path: &str) -> common::Response {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ns.enter(move || {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        http_exchange(s, &req).unwrap()
    })
}

#[test]
fn every_listen_address_serves_the_same_endpoint() {
    let ns = Netns::new("listen2");
    let exp = Exporter::start_cmd(ns.cmd(EXPORTER).args([
        &format!("--web.listen-address=127.0.0.1:{PORT}"),
        "--web.listen-address=127.0.0.2:9862",
        "--no-collector.netns",
    ]));
    let first = exp.scrape();
    let second = get_at(&ns, ([127, 0, 0, 2], 9862).into(), "/metrics");
    assert_eq!(second.status, 200);
    let body = common::checked(String::from_utf8(second.body).unwrap());
    for b in [&first, &body] {
        assert!(b.contains("netpressure_build_info{"), "{b}");
    }
    // Readiness too, not only the metrics.
    assert_eq!(get_at(&ns, ([127, 0, 0, 2], 9862).into(), "/-/ready").status, 200);
    let (code, log) = exp.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains(&format!("listening on 127.0.0.1:{PORT}, 127.0.0.2:9862")),
        "{log}"
    );
}

#[test]
fn socket_activated_it_serves_on_the_socket_systemd_passes() {
    let ns = Netns::new("sockact");
    let exp = Exporter::start_cmd(ns.cmd("systemd-socket-activate").args([
        "-l",
        &format!("127.0.0.1:{PORT}"),
        EXPORTER,
        "--web.systemd-socket",
        "--no-collector.netns",
    ]));
    let body = exp.scrape();
    assert!(body.contains("netpressure_build_info{"));
    let (code, log) = exp.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains(&format!("listening on 127.0.0.1:{PORT}")), "{log}");
}

#[test]
fn systemd_socket_without_sockets_says_what_to_do() {
    let out = std::process::Command::new(EXPORTER)
        .args(["--web.systemd-socket"])
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--web.systemd-socket") && err.contains("LISTEN_FDS"),
        "{err}"
    );
    assert!(
        err.contains("systemd-socket-activate") || err.contains(".socket"),
        "{err}"
    );
}

/// A unix-domain socket from systemd, and LISTEN_FDS without LISTEN_PID (which
/// sd_listen_fds ignores): each refused with what to do, not "invalid argument" or
/// descriptors used that may not be ours. Two listen addresses that overlap: a usage
/// error (2) naming both flags, not "Address already in use" at bind.
#[test]
fn systemd_sockets_that_are_not_ours_or_not_tcp_and_overlapping_addresses_are_refused_clearly() {
    let ns = Netns::new("sockbad");
    let path = std::env::temp_dir().join(format!("np-sock-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let child = ns
        .cmd("systemd-socket-activate")
        .args([
            "-l",
            path.to_str().unwrap(),
            EXPORTER,
            "--web.systemd-socket",
            "--no-collector.netns",
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // systemd-socket-activate starts the service at the first connection.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&path).is_err() {
        assert!(std::time::Instant::now() < deadline, "no socket at {}", path.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not a TCP socket") && err.contains("ListenStream="),
        "{err}"
    );

    let out = std::process::Command::new(EXPORTER)
        .args(["--web.systemd-socket", "--no-collector.netns"])
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("LISTEN_PID is not"), "{err}");

    let out = std::process::Command::new(EXPORTER)
        .args(["--web.listen-address=:19861", "--web.listen-address=127.0.0.1:19861"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--web.listen-address :19861 and --web.listen-address 127.0.0.1:19861 overlap"),
        "{err}"
    );
}

/// A client that fills one address with connections that never send a byte cannot lock
/// the other address out: the connection cap and its eviction hold for the exporter as a
/// whole, and the listeners are accepted from in turn.
#[test]
fn idle_connections_on_one_address_do_not_starve_the_other() {
    let ns = Netns::new("listenflood");
    let exp = Exporter::start_cmd(ns.cmd(EXPORTER).args([
        &format!("--web.listen-address=127.0.0.1:{PORT}"),
        "--web.listen-address=127.0.0.2:9862",
        "--no-collector.netns",
    ]));
    let idle: Vec<TcpStream> = ns.enter(|| {
        let addr = SocketAddr::from(([127, 0, 0, 2], 9862));
        (0..500)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
            .collect()
    });
    assert_eq!(idle.len(), 500);
    // The exporter's own evidence that it has taken every idle connection: all but the
    // cap's 64 were closed to make room.
    let evicted = |b: &str| common::metric(b, "netpressure_http_connections_evicted_total", "").unwrap();
    let body = common::scrape_until(&exp, "every idle connection taken", |b| evicted(b) >= 436.0);
    assert!(common::metric(&body, "netpressure_http_connections", "").unwrap() <= 64.0);
    // The first address is still answered, with the cap held by the other's idle ones.
    for _ in 0..10 {
        let body = exp.scrape();
        assert!(body.contains("netpressure_build_info{"));
    }
    drop(idle);
}

/// Opens connections from `from` to `to` without pause and never sends a byte on
/// them, holding the newest 200, until stopped.
struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Flood {
    fn start(ns: &Netns, from: [u8; 4], to: SocketAddr) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (name, s) = (ns.name.clone(), std::sync::Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            common::enter(&name, move || {
                let mut held = std::collections::VecDeque::new();
                let mut opened = 0;
                while !s.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(c) = common::connect_from(from, to) {
                        opened += 1;
                        held.push_back(c);
                        if held.len() > 200 {
                            held.pop_front();
                        }
                    }
                }
                opened
            })
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// The connections it opened.
    fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap())
    }
}

/// A flood of connections that never send a byte, from one client or to one address,
/// closes its own connections at the cap before one from elsewhere whose request is
/// still on its way (50 ms, a client a round trip away): the flood keeps it busy, but
/// every scrape from elsewhere is served. Without the crowd rule the scrape's
/// connection, older than every flood connection accepted after it, was the quietest
/// and was closed (the CI run of stop 32 lost a scrape this way to a flood of 500).
#[test]
fn a_flood_from_one_client_or_to_one_address_closes_its_own_connections_first() {
    let ns = Netns::new("crowd");
    let exp = Exporter::start_cmd(ns.cmd(EXPORTER).args([
        &format!("--web.listen-address=127.0.0.1:{PORT}"),
        "--web.listen-address=127.0.0.2:9862",
        "--no-collector.netns",
    ]));
    let first = SocketAddr::from(([127, 0, 0, 1], PORT));
    let evicted = |b: &str| common::metric(b, "netpressure_http_connections_evicted_total", "").unwrap();
    let floods = [
        (
            "to the other address",
            [127, 0, 0, 1],
            SocketAddr::from(([127, 0, 0, 2], 9862)),
        ),
        ("from another client", [127, 0, 0, 3], first),
    ];
    for (what, from, to) in floods {
        let before = evicted(&exp.scrape());
        let flood = Flood::start(&ns, from, to);
        // The exporter's evidence that the flood holds the cap.
        common::scrape_until(&exp, "the flood at the cap", |b| evicted(b) >= before + 200.0);
        let mut failed = Vec::new();
        for i in 0..30 {
            let got = ns.enter(move || {
                let stream = common::connect_from([127, 0, 0, 1], first)?;
                std::thread::sleep(Duration::from_millis(50));
                http_exchange(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            });
            match got {
                Ok(r) if r.status == 200 => {
                    common::checked(String::from_utf8(r.body).unwrap());
                }
                Ok(r) => failed.push(format!("scrape {i}: status {}", r.status)),
                Err(e) => failed.push(format!("scrape {i}: {e}")),
            }
        }
        let after = evicted(&exp.scrape());
        let opened = flood.stop();
        eprintln!("flood {what}: {opened} connections opened, {} evicted", after - before);
        assert!(
            failed.is_empty(),
            "flood {what}: {} of 30 scrapes failed: {failed:?}",
            failed.len()
        );
        // The flood really held the cap while the scrapes came.
        assert!(
            after - before >= 1000.0,
            "flood {what}: only {} evictions",
            after - before
        );
    }
}
