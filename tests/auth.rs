//! Basic auth under a password-spraying client: bcrypt's cost stays bounded however
//! many clients come and go, every refused attempt is counted, and Prometheus's known
//! credentials never wait behind a stranger's. The real binary, real sockets, hashes
//! made by `htpasswd`, each test in a network namespace of its own.

#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{checked, metric, run, Exporter, Netns, PORT};

/// A bcrypt hash of `password` at `cost`, as `htpasswd` makes it.
fn htpasswd(cost: u32, password: &str) -> String {
    let out = run(Command::new("htpasswd").args(["-nbBC", &cost.to_string(), "", password]));
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_start_matches(':')
        .to_string()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A web config with `users` (name, hash), in a file removed with the namespace's test.
struct WebConfig(std::path::PathBuf);

impl WebConfig {
    fn new(tag: &str, users: &[(&str, String)]) -> Self {
        let path = std::env::temp_dir().join(format!("netpressure-auth-{tag}-{}.yml", std::process::id()));
        let mut text = "basic_auth_users:\n".to_string();
        for (u, h) in users {
            text.push_str(&format!("  {u}: \"{h}\"\n"));
        }
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn flag(&self) -> String {
        format!("--web.config.file={}", self.0.display())
    }
}

impl Drop for WebConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `/metrics` with credentials, strictly checked; with how long it took.
fn scrape_as(exp: &Exporter, auth: &str) -> (String, Duration) {
    let t = Instant::now();
    let r = exp.get_with("/metrics", &[("Authorization", auth)]).unwrap();
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    (checked(String::from_utf8(r.body).unwrap()), took)
}

/// Scrapes with `auth` until `pred` holds for the body (the self-metrics come with the
/// sampler's next snapshot), or panics with the last body.
fn scrape_as_until(exp: &Exporter, auth: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (body, _) = scrape_as(exp, auth);
        if pred(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from `state` (field 3).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Prometheus's side: one kept-alive connection, scrape after scrape, opened again
/// only when the exporter closes it (counted).
struct KeepAlive {
    ns: String,
    conn: Option<std::io::BufReader<TcpStream>>,
    opened: usize,
}

impl KeepAlive {
    fn new(ns: &Netns) -> Self {
        Self {
            ns: ns.name.clone(),
            conn: None,
            opened: 0,
        }
    }

    /// `/metrics` with `auth`: the status and body, and how long it took.
    fn scrape(&mut self, auth: &str) -> (u16, Vec<u8>, Duration) {
        let t = Instant::now();
        for _ in 0..3 {
            if self.conn.is_none() {
                let s = common::enter(&self.ns, || {
                    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], PORT)), Duration::from_secs(5))
                })
                .unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                self.conn = Some(std::io::BufReader::new(s));
                self.opened += 1;
            }
            let conn = self.conn.as_mut().unwrap();
            let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n");
            match conn
                .get_mut()
                .write_all(req.as_bytes())
                .and_then(|()| read_response(conn))
            {
                Ok((status, body)) => return (status, body, t.elapsed()),
                Err(e) => {
                    eprintln!("scrape on a kept-alive connection: {e}");
                    self.conn = None;
                }
            }
        }
        panic!("no answer on three connections");
    }
}

/// One HTTP/1.1 response with a Content-Length.
fn read_response(r: &mut std::io::BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{BufRead as _, Read as _};
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = 0;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok((status, body))
}

/// TcpExtListenOverflows in `ns`: connections the kernel dropped from a full accept
/// queue before the exporter could accept them.
fn listen_overflows(ns: &Netns) -> u64 {
    let out = ns.sh("cat /proc/net/netstat");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "ListenOverflows")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap()
}

/// Each thread's name and CPU seconds, for the log.
fn threads_cpu(pid: u32) -> String {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let tid: u32 = t.file_name().to_str().unwrap().parse().unwrap();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let Some(close) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let secs = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / hz;
        out.push(format!("{}({tid})={secs:.2}", comm.trim()));
    }
    out.join(" ")
}

/// One wrong attempt that hangs up `after` the request is sent, as a client that does
/// not wait for bcrypt.
fn hang_up_attempt(password: &str, after: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        basic("prom", password)
    );
    let sent = s.write_all(req.as_bytes()).is_ok();
    std::thread::sleep(after);
    sent
}

/// `clients` threads in a namespace, each sending wrong passwords for prom and hanging
/// up 10 ms after each; stopped (and joined) by [`Spray::stop`] or on drop, so a failed
/// test leaves nothing running.
struct Spray {
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spray {
    fn start(ns: &Netns, clients: usize, hang_up_after: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicU64::new(0));
        let (name, s, a) = (ns.name.clone(), Arc::clone(&stop), Arc::clone(&attempts));
        let thread = std::thread::spawn(move || {
            common::enter(&name, move || {
                let origin = Instant::now();
                let threads: Vec<_> = (0..clients)
                    .map(|c| {
                        let (stop, attempts) = (Arc::clone(&s), Arc::clone(&a));
                        std::thread::spawn(move || {
                            let mut n = 0u64;
                            while !stop.load(Ordering::Relaxed) {
                                let password = format!("spray-{c}-{n}-{:x}", origin.elapsed().as_nanos());
                                if hang_up_attempt(&password, hang_up_after) {
                                    attempts.fetch_add(1, Ordering::Relaxed);
                                }
                                n += 1;
                            }
                        })
                    })
                    .collect();
                for t in threads {
                    let _ = t.join();
                }
            });
        });
        Self {
            stop,
            attempts,
            thread: Some(thread),
        }
    }

    /// Stops the clients; the attempts they sent.
    fn stop(mut self) -> u64 {
        self.halt();
        self.attempts.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Spray {
    fn drop(&mut self) {
        self.halt();
    }
}

/// An exporter in a namespace of its own whose one user, prom, has a cost-10 hash (as
/// htpasswd's users are told to use: 58 ms a verification here), and prom's
/// `Authorization` header.
fn with_prometheus(tag: &str) -> (Netns, WebConfig, Exporter, String) {
    let ns = Netns::new(tag);
    let web = WebConfig::new(tag, &[("prom", htpasswd(10, "s3cret"))]);
    let exp = Exporter::start(&ns, &[&web.flag(), "--no-collector.netns"]);
    (ns, web, exp, basic("prom", "s3cret"))
}

#[test]
fn clients_that_hang_up_cannot_multiply_bcrypt_and_every_attempt_is_counted() {
    let (ns, _web, exp, auth) = with_prometheus("spray");
    let pid = exp.pid();
    let idle_threads = status_field(pid, "Threads:");

    // Prometheus's password, verified once and remembered.
    scrape_as_until(&exp, &auth, "the first verification", |b| {
        metric(b, "netpressure_http_auth_verifications_total", "") == Some(1.0)
    });

    // 50 wrong attempts, one after another, each hanging up after 10 ms: all counted.
    for i in 0..50 {
        ns.enter(move || hang_up_attempt(&format!("wrong-{i}"), Duration::from_millis(10)));
    }
    let body = scrape_as_until(&exp, &auth, "50 refused attempts counted", |b| {
        metric(b, "netpressure_http_requests_unauthorized_total", "") >= Some(50.0)
    });
    let verified = metric(&body, "netpressure_http_auth_verifications_total", "").unwrap();
    let abandoned = metric(&body, "netpressure_http_auth_abandoned_total", "").unwrap();
    eprintln!("50 attempts that hung up: {verified} verifications, {abandoned} skipped unverified");
    assert_eq!(
        metric(&body, "netpressure_http_requests_unauthorized_total", ""),
        Some(50.0)
    );

    // 200 clients spraying random wrong passwords, hanging up after 10 ms, for 20 s,
    // while Prometheus scrapes with its known password.
    let attack = Spray::start(&ns, 200, Duration::from_millis(10));
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut most_threads = 0;
    let mut prometheus = KeepAlive::new(&ns);
    while started.elapsed() < Duration::from_secs(20) {
        let (status, body, took) = prometheus.scrape(&auth);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        checked(String::from_utf8(body).unwrap());
        latencies.push(took);
        most_threads = most_threads.max(status_field(pid, "Threads:"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu = (cpu_seconds(pid) - cpu_before) / started.elapsed().as_secs_f64();
    eprintln!("CPU seconds by thread: {}", threads_cpu(pid));
    let sent = attack.stop();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    // An attempt the exporter accepted is refused and counted, or its connection was
    // closed to make room for another before its request was read; one the kernel
    // dropped from a full accept queue never reached it, and shows in ListenOverflows.
    let overflows = listen_overflows(&ns);
    let counted = |b: &str| -> f64 {
        [
            "netpressure_http_requests_unauthorized_total",
            "netpressure_http_connections_evicted_total",
        ]
        .iter()
        .map(|name| metric(b, name, "").unwrap_or(0.0))
        .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (body, _) = scrape_as(&exp, &auth);
        if counted(&body) + overflows as f64 >= (sent + 50) as f64 || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let metric_of = |name| metric(&body, name, "").unwrap();
    eprintln!(
        "{sent} attempts in 20 s: {} scrapes with the known password on {} connection(s), p99 {p99:?}, slowest {:?}; \
         exporter CPU {:.2} of a core, threads {idle_threads} idle, {most_threads} at most; \
         {} verifications, {} skipped, {} refused, {} evicted, {overflows} dropped by the kernel",
        latencies.len(),
        prometheus.opened,
        latencies.last().unwrap(),
        cpu,
        metric_of("netpressure_http_auth_verifications_total"),
        metric_of("netpressure_http_auth_abandoned_total"),
        metric_of("netpressure_http_requests_unauthorized_total"),
        metric_of("netpressure_http_connections_evicted_total"),
    );
    assert!(sent >= 1000, "the attack sent only {sent} attempts");
    // Strangers' connections, idle or waiting for a refusal, are closed before the one
    // that proved its password (the third hostile round saw it reset on 9 of 199).
    assert_eq!(
        prometheus.opened,
        1,
        "Prometheus's kept-alive connection was closed {} times during the spray",
        prometheus.opened - 1
    );
    assert!(
        counted(&body) + overflows as f64 >= (sent + 50) as f64,
        "{sent} + 50 attempts, {} counted by the exporter, {overflows} dropped by the kernel",
        counted(&body)
    );
    // The idle threads, the verifier's, and one blocking thread that encodes scrapes.
    assert!(
        most_threads <= idle_threads + 2,
        "{most_threads} threads, {idle_threads} idle"
    );
    assert!(cpu < 1.0, "the exporter used {cpu:.2} of a core");
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
}

#[test]
fn a_new_connection_with_the_password_is_served_while_strangers_hold_the_cap() {
    let (ns, _web, exp, auth) = with_prometheus("newconn");
    scrape_as_until(&exp, &auth, "the first verification", |b| {
        metric(b, "netpressure_http_auth_verifications_total", "") == Some(1.0)
    });
    // 100 clients (the cap is 64) that connect, send a wrong password and hang up, as
    // the third hostile round did; meanwhile each scrape with the right password comes
    // on a connection of its own, as after a Prometheus restart, and sends its request
    // 50 ms after connecting, as a TLS client 50 ms away does after its handshake. The
    // round saw 1 of 62 fail: the new connection, the only one not yet sending, was
    // closed for a stranger's.
    let attack = Spray::start(&ns, 100, Duration::ZERO);
    let slow_client = |auth: &str| {
        let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n");
        let stream =
            ns.enter(|| TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], PORT)), Duration::from_secs(5)))?;
        std::thread::sleep(Duration::from_millis(50));
        common::http_exchange(stream, &req)
    };
    let (mut failed, mut scrapes) = (Vec::new(), 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        match slow_client(&auth) {
            Ok(r) if r.status == 200 => {
                checked(String::from_utf8(r.body).unwrap());
            }
            Ok(r) => failed.push(format!("scrape {scrapes}: status {}", r.status)),
            Err(e) => failed.push(format!("scrape {scrapes}: {e}")),
        }
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = attack.stop();
    eprintln!("{sent} wrong attempts beside {scrapes} scrapes on new connections");
    assert!(sent >= 1000, "the attack sent only {sent} attempts");
    assert!(
        failed.is_empty(),
        "{} of {scrapes} scrapes failed: {failed:?}",
        failed.len()
    );
}

#[test]
fn known_credentials_never_wait_behind_strangers() {
    let ns = Netns::new("known");
    // The strangers guess passwords for alice, whose hash is cheap (cost 4) so that
    // 2,000 verifications take seconds; Prometheus's is cost 10, so re-verifying it
    // would show as 58 ms and as a verification.
    let web = WebConfig::new(
        "known",
        &[("alice", htpasswd(4, "alice-pw")), ("prom", htpasswd(10, "s3cret"))],
    );
    let exp = Exporter::start(&ns, &[&web.flag(), "--no-collector.netns"]);
    let auth = basic("prom", "s3cret");
    scrape_as_until(&exp, &auth, "the first verification", |b| {
        metric(b, "netpressure_http_auth_verifications_total", "") == Some(1.0)
    });
    let mut baseline: Vec<Duration> = (0..20).map(|_| scrape_as(&exp, &auth).1).collect();
    baseline.sort();

    // 2,000 distinct wrong passwords, each waiting for its answer, from 8 clients.
    let refused = ns.enter(|| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                std::thread::spawn(move || {
                    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
                    let mut refused = 0;
                    for i in 0..250 {
                        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let req = format!(
                            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\r\n",
                            basic("alice", &format!("guess-{t}-{i}"))
                        );
                        s.write_all(req.as_bytes()).unwrap();
                        let mut head = [0u8; 12];
                        std::io::Read::read_exact(&mut s, &mut head).unwrap();
                        refused += usize::from(&head[9..12] == b"401");
                    }
                    refused
                })
            })
            .collect::<Vec<_>>();
        threads.into_iter().map(|t| t.join().unwrap()).sum::<usize>()
    });
    assert_eq!(
        refused, 2000,
        "every guess answered 401 (none 503: 8 clients fit the queue)"
    );
    let before = scrape_as_until(&exp, &auth, "the guesses verified", |b| {
        metric(b, "netpressure_http_auth_verifications_total", "") >= Some(2001.0)
    });
    let verified = metric(&before, "netpressure_http_auth_verifications_total", "").unwrap();
    // Prometheus's next scrape costs no verification, and takes what it took before.
    let (_, took) = scrape_as(&exp, &auth);
    // A request without credentials after it: a snapshot that counts this refusal was
    // taken after the known scrape.
    let refused_before = metric(&before, "netpressure_http_requests_unauthorized_total", "").unwrap();
    let marker = exp.get("/metrics").unwrap().status;
    assert_eq!(marker, 401);
    let after = scrape_as_until(&exp, &auth, "a snapshot taken after the known scrape", |b| {
        metric(b, "netpressure_http_requests_unauthorized_total", "") > Some(refused_before)
    });
    assert_eq!(
        metric(&after, "netpressure_http_auth_verifications_total", ""),
        Some(verified),
        "the known password was verified again"
    );
    let median = baseline[baseline.len() / 2];
    eprintln!(
        "after 2,000 wrong passwords the known one took {took:?} (before: median {median:?}, worst {:?})",
        baseline.last().unwrap()
    );
    assert!(took < Duration::from_millis(50), "{took:?}: a verification costs 58 ms");
}

fn rss_bytes(pid: u32) -> u64 {
    status_field(pid, "VmRSS:") * 1024
}

#[test]
fn web_config_files_that_block_or_never_end_cannot_stall_or_bloat_the_endpoint() {
    let ns = Netns::new("wcfile");
    let dir = std::env::temp_dir().join(format!("netpressure-wcfile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("web.yml");
    let good = format!("basic_auth_users:\n  prom: \"{}\"\n", htpasswd(4, "s3cret"));
    let mkfifo = |path: &std::path::Path| run(Command::new("mkfifo").arg(path));

    // At start, a FIFO is an error at once, not an open that waits for a writer.
    mkfifo(&config);
    let t = Instant::now();
    let (code, err) = common::start_refused(&config);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    std::fs::remove_file(&config).unwrap();

    std::fs::write(&config, &good).unwrap();
    let exp = Exporter::start(
        &ns,
        &[
            &format!("--web.config.file={}", config.display()),
            "--no-collector.netns",
        ],
    );
    let auth = basic("prom", "s3cret");
    scrape_as(&exp, &auth);
    let idle_rss = rss_bytes(exp.pid());
    // Each bad file replaces the configuration the way a Secret update does (a
    // rename over it); the next request notices the change and tries it.
    let swap = |make: &dyn Fn(&std::path::Path)| {
        let next = dir.join("next");
        let _ = std::fs::remove_file(&next);
        make(&next);
        std::fs::rename(&next, &config).unwrap();
    };
    type Make<'a> = &'a dyn Fn(&std::path::Path);
    let bad: [(&str, Make); 3] = [
        ("a FIFO", &|p| {
            mkfifo(p);
        }),
        ("a symlink to /dev/zero", &|p| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
        ("a 400 MB file", &|p| {
            let f = std::fs::File::create(p).unwrap();
            f.set_len(400 << 20).unwrap();
        }),
    ];
    for (what, make) in bad {
        swap(make);
        // Served all along with the last good configuration, and said to have failed.
        let body = scrape_as_until(&exp, &auth, &format!("{what} refused"), |b| {
            metric(b, "netpressure_web_config_last_reload_successful", "") == Some(0.0)
        });
        assert!(body.contains("netpressure_build_info"), "{what}");
        assert_eq!(exp.get("/-/healthy").unwrap().status, 200, "{what}");
        assert_eq!(
            exp.get("/metrics").unwrap().status,
            401,
            "{what}: the old users still apply"
        );
        let rss = rss_bytes(exp.pid());
        eprintln!("{what}: RSS {rss} (idle {idle_rss})");
        assert!(rss < idle_rss + (16 << 20), "{what}: RSS {rss}, idle {idle_rss}");
        // Back to a good file: loaded again.
        swap(&|p| std::fs::write(p, &good).unwrap());
        scrape_as_until(&exp, &auth, &format!("the good file after {what}"), |b| {
            metric(b, "netpressure_web_config_last_reload_successful", "") == Some(1.0)
        });
    }
    // The FIFO again, then SIGTERM: the process ends within 5 s.
    swap(&|p| {
        mkfifo(p);
    });
    scrape_as_until(&exp, &auth, "the FIFO refused again", |b| {
        metric(b, "netpressure_web_config_last_reload_successful", "") == Some(0.0)
    });
    let t = Instant::now();
    let (code, log) = exp.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(t.elapsed() < Duration::from_secs(5), "SIGTERM took {:?}", t.elapsed());
    assert!(log.contains("not a regular file"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
