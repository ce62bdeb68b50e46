//! `netpressure_exporter doctor` against the real kernel: namespaces made with each
//! condition (a listener clamped by somaxconn with a full queue, a conntrack table over
//! 90% of a lowered nf_conntrack_max, a remote holding most of a narrowed port range in
//! TIME_WAIT with tcp_tw_reuse=0, a process at 97% of a low RLIMIT_NOFILE) yield their
//! finding with its severity, evidence and namespace; twin namespaces without the
//! condition yield none; `--from` a running exporter gives the same findings.

#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{connect_many, listen_with_backlog, ConntrackMaxGuard, Exporter, Flows, Netns, EXPORTER, PORT};

/// A child killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The tests read or lower the global nf_conntrack_max: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One finding of the JSON output, its fields as text ("" for null).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Found {
    check: String,
    severity: String,
    netns: String,
    subject: String,
    evidence: String,
}

/// The value of `"key":"..."` (or null) in one JSON object's text.
fn field(obj: &str, key: &str) -> String {
    let Some(at) = obj.find(&format!("\"{key}\":")) else {
        return String::new();
    };
    let rest = &obj[at + key.len() + 3..];
    let Some(rest) = rest.strip_prefix('"') else {
        return String::new();
    };
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().unwrap()),
            '"' => break,
            c => out.push(c),
        }
    }
    out
}

fn findings(json: &str) -> Vec<Found> {
    let list = &json[json.find("\"findings\":[").unwrap()..];
    list.split("{\"check\":")
        .skip(1)
        .map(|o| {
            let o = format!("{{\"check\":{o}");
            Found {
                check: field(&o, "check"),
                severity: field(&o, "severity"),
                netns: field(&o, "netns"),
                subject: field(&o, "subject"),
                evidence: field(&o, "evidence"),
            }
        })
        .collect()
}

fn ino(ns: &Netns) -> String {
    ns.label("")
        .trim_start_matches("netns=\"")
        .trim_end_matches('"')
        .to_string()
}

/// Runs the doctor in `home` with `args`; returns its exit status and findings.
fn doctor(home: &Netns, args: &[&str]) -> (i32, Vec<Found>, String) {
    let out = home
        .cmd(EXPORTER)
        .args(["doctor", "--format", "json"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "doctor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap(), findings(&text), text)
}

#[test]
fn each_condition_yields_its_finding_and_its_twin_without_it_none() {
    let _s = serial();
    let home = Netns::new("dochome");

    // A listener whose backlog of 511 is clamped to somaxconn 128, its queue full
    // (129 connections, none accepted); the twin keeps the default somaxconn.
    let clamped = Netns::new("docsomax");
    clamped.sh("sysctl -qw net.core.somaxconn=128");
    let _queue = clamped.enter(|| {
        let l = listen_with_backlog(7400, 511);
        let c = connect_many(7400, 129, Duration::from_secs(2));
        (l, c)
    });
    let roomy = Netns::new("docroomy");
    let _roomy = roomy.enter(|| {
        let l = listen_with_backlog(7400, 511);
        let c = connect_many(7400, 3, Duration::from_secs(2));
        (l, c)
    });

    // A listener whose own small backlog (4, somaxconn 4096) is full.
    let small = Netns::new("docsmall");
    let _small = small.enter(|| {
        let l = listen_with_backlog(7401, 4);
        let c = connect_many(7401, 5, Duration::from_secs(2));
        (l, c)
    });

    // 7 half-open connections (the client's final ACK dropped) against
    // tcp_max_syn_backlog 8.
    let syn = Netns::new("docsyn");
    syn.sh("sysctl -qw net.ipv4.tcp_max_syn_backlog=8 && nft add table inet np \
         && nft add chain inet np out '{ type filter hook output priority 0; }' \
         && nft add rule inet np out tcp dport 7402 'tcp flags & (syn | ack) == ack' drop");
    let _syn = syn.enter(|| {
        let l = listen_with_backlog(7402, 128);
        let c = connect_many(7402, 7, Duration::from_secs(2));
        (l, c)
    });

    // A remote holding 96 of 100 local ports in TIME_WAIT, tcp_tw_reuse off; the twin
    // holds 5.
    let tw = |tag: &str, n: usize| {
        let ns = Netns::new(tag);
        ns.sh("sysctl -qw net.ipv4.ip_local_port_range='40000 40099' && sysctl -qw net.ipv4.tcp_tw_reuse=0");
        ns.enter(move || common::client_closed_connections(7500, n));
        ns
    };
    let ports = tw("docports", 96);
    let few = tw("docfew", 5);
    // TIME_WAIT at tcp_max_tw_buckets: 60 closes against 50 buckets.
    let buckets = Netns::new("doctwb");
    buckets.sh("sysctl -qw net.ipv4.tcp_max_tw_buckets=50");
    buckets.enter(|| common::client_closed_connections(7501, 60));

    // A conntrack table over 90% of a lowered limit; the twin at 5%.
    let _max = ConntrackMaxGuard::set(100);
    let full = Netns::with_conntrack("docct");
    let _flows = Flows::open(&full, 8080, 95, Duration::from_secs(2));
    let light = Netns::with_conntrack("docctl");
    let _light = Flows::open(&light, 8080, 5, Duration::from_secs(2));
    // A full table that keeps refusing: a client tries a new connection every 100 ms
    // for as long as the doctor watches.
    let dropping = Netns::with_conntrack("docdrop");
    let _dropping = Flows::open(&dropping, 8080, 100, Duration::from_secs(2));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let knocking = {
        let stop = std::sync::Arc::clone(&stop);
        let name = dropping.name.clone();
        std::thread::spawn(move || {
            common::enter(&name, move || {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(100));
                }
            });
        })
    };

    // A process at 97% of RLIMIT_NOFILE 100 (97 descriptors, counting what it inherits).
    let mut hog = Command::new("prlimit")
        .args(["--nofile=100:100", "python3", "-c"])
        .arg(
            "import ctypes, os, sys, time\n\
             ctypes.CDLL(None).prctl(15, b'np-fdhog', 0, 0, 0)\n\
             fds = []\n\
             while len(os.listdir('/proc/self/fd')) - 1 < 97: fds.append(os.open('/dev/null', os.O_RDONLY))\n\
             print('ready', flush=True)\n\
             time.sleep(120)",
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    hog.stdout.as_mut().unwrap().read_exact(&mut ready).unwrap();
    let hog = Killed(hog);
    let hog_subject = format!("process np-fdhog (pid {})", hog.0.id());

    let (code, local, text) = doctor(&home, &["--duration", "2s"]);
    let of = |f: &[Found], check: &str, ns: &Netns| -> Vec<Found> {
        f.iter()
            .filter(|x| x.check == check && x.netns == ino(ns))
            .cloned()
            .collect()
    };

    let l = of(&local, "listener-somaxconn", &clamped);
    assert_eq!(l.len(), 1, "{text}");
    assert_eq!(
        (l[0].severity.as_str(), l[0].subject.as_str()),
        ("warning", "listener 127.0.0.1:7400")
    );
    assert!(
        l[0].evidence.contains("clamped to net.core.somaxconn 128") && l[0].evidence.contains("peaked at 129 of 128"),
        "{l:?}"
    );
    assert!(of(&local, "listener-somaxconn", &roomy).is_empty() && of(&local, "listener-backlog", &roomy).is_empty());

    let p = of(&local, "ports-remote", &ports);
    assert_eq!(p.len(), 1, "{text}");
    assert_eq!(
        (p[0].severity.as_str(), p[0].subject.as_str()),
        ("critical", "remote 127.0.0.1:7500"),
        "{p:?}"
    );
    // The kernel retires an odd TIME_WAIT socket early (seen: 89 of 90; the sockets
    // test saw 284 of 300), so the count is a range, and the sockets, TIME_WAIT and
    // share must agree.
    let n: u32 = p[0].evidence.split(' ').next().unwrap().parse().unwrap();
    assert!((80..=96).contains(&n), "{p:?}");
    assert!(
        p[0].evidence.starts_with(&format!(
            "{n} sockets ({n} in TIME_WAIT) hold {n}% of the 100 local ports; tcp_tw_reuse=0"
        )),
        "{p:?}"
    );
    assert!(of(&local, "ports-remote", &few).is_empty());

    let c = of(&local, "conntrack-fill", &full);
    assert_eq!(c.len(), 1, "{text}");
    assert_eq!(c[0].severity, "critical");
    assert!(
        c[0].evidence
            .starts_with("peak 95 entries of nf_conntrack_max 100 (95%)"),
        "{c:?}"
    );
    assert!(of(&local, "conntrack-fill", &light).is_empty());

    let b = of(&local, "listener-backlog", &small);
    assert_eq!(b.len(), 1, "{text}");
    assert_eq!(
        (b[0].severity.as_str(), b[0].subject.as_str()),
        ("warning", "listener 127.0.0.1:7401")
    );
    assert!(
        b[0].evidence
            .starts_with("the accept queue peaked at its limit 4 (net.core.somaxconn is 4096)"),
        "{b:?}"
    );

    let q = of(&local, "syn-backlog", &syn);
    assert_eq!(q.len(), 1, "{text}");
    assert_eq!(
        (q[0].severity.as_str(), q[0].evidence.as_str()),
        ("warning", "7 half-open connections against tcp_max_syn_backlog 8")
    );
    assert!(of(&local, "syn-backlog", &roomy).is_empty());

    let t = of(&local, "timewait-buckets", &buckets);
    assert_eq!(t.len(), 1, "{text}");
    assert_eq!(t[0].severity, "warning");
    let peak: u32 = t[0].evidence.split(' ').nth(3).unwrap().parse().unwrap();
    assert!((40..=50).contains(&peak), "{t:?}");
    assert!(
        t[0].evidence.starts_with(&format!(
            "TIME_WAIT peaked at {peak} of tcp_max_tw_buckets 50 ({}%)",
            peak * 2
        )),
        "{t:?}"
    );
    assert!(of(&local, "timewait-buckets", &few).is_empty());

    let d = of(&local, "conntrack-drops", &dropping);
    assert!(
        d.iter()
            .any(|x| x.severity == "critical" && x.evidence.contains("packets dropped because the table was full")),
        "{text}"
    );
    assert!(
        of(&local, "conntrack-drops", &full).is_empty(),
        "a table at 95% drops nothing"
    );

    let f: Vec<&Found> = local
        .iter()
        .filter(|x| x.check == "fd-process" && x.subject == hog_subject)
        .collect();
    assert_eq!(f.len(), 1, "{text}");
    assert_eq!(f[0].severity, "critical");
    assert!(
        f[0].evidence
            .starts_with("97 open descriptors of its RLIMIT_NOFILE 100 (97%)"),
        "{f:?}"
    );
    assert_eq!(code, 1, "a critical finding exits 1");

    // The same findings from a running exporter's metrics.
    let exp = Exporter::start(&home, &["--netns.interval=1s", "--scan.interval=1s"]);
    let _ = common::scrape_until(&exp, "every condition sampled", |b| {
        [&clamped, &small, &syn, &ports, &buckets, &full, &dropping]
            .iter()
            .all(|ns| b.contains(&ns.label("")))
            && b.contains("np-fdhog")
    });
    let url = format!("http://127.0.0.1:{PORT}/metrics");
    let (_, remote, text) = doctor(&home, &["--from", &url, "--duration", "2s"]);
    let ours = |f: &[Found]| -> Vec<(String, String, String, String)> {
        let mut v: Vec<_> = f
            .iter()
            .filter(|x| {
                [
                    &clamped, &roomy, &small, &syn, &ports, &few, &buckets, &full, &light, &dropping,
                ]
                .iter()
                .any(|ns| x.netns == ino(ns))
                    || x.subject == hog_subject
            })
            .map(|x| (x.check.clone(), x.severity.clone(), x.netns.clone(), x.subject.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(ours(&remote), ours(&local), "{text}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    knocking.join().unwrap();
    let kp: Vec<&Found> = remote.iter().filter(|x| x.check == "conntrack-kube-proxy").collect();
    assert!(kp[0].evidence.starts_with("not checked"), "{kp:?}");
    drop(hog);
}

/// A process named kube-proxy (prctl PR_SET_NAME) with `args` on its command line,
/// running until the returned guard is dropped; returns once it is ready.
fn fake_kube_proxy(args: &[&str]) -> Killed {
    let mut kp = Command::new("python3")
        .args([
            "-c",
            "import ctypes, time\nctypes.CDLL(None).prctl(15, b'kube-proxy', 0, 0, 0)\nprint('ready', flush=True)\ntime.sleep(60)",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    kp.stdout.as_mut().unwrap().read_exact(&mut ready).unwrap();
    Killed(kp)
}

#[test]
fn kube_proxy_on_the_node_says_what_it_will_set() {
    let _s = serial();
    let home = Netns::new("dockp");
    // A process named kube-proxy with its conntrack flags on its command line.
    let kp = fake_kube_proxy(&["--conntrack-max-per-core=1000", "--conntrack-min=5000"]);
    let (_, found, text) = doctor(&home, &["--duration", "1s"]);
    drop(kp);
    let cpus = std::thread::available_parallelism().unwrap().get() as u64;
    let will = (1000 * cpus).max(5000);
    let limit: u64 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let k: Vec<&Found> = found.iter().filter(|x| x.check == "conntrack-kube-proxy").collect();
    assert_eq!(k.len(), 1, "{text}");
    assert_eq!(k[0].severity, if will == limit { "info" } else { "warning" });
    assert!(
        k[0].evidence.contains(&format!(
            "will set {will} at its next start (1000 per core x {cpus} CPUs, at least 5000, from its flags or config)"
        )),
        "{k:?}"
    );
}

#[test]
fn usage_errors_exit_2_and_an_unreachable_exporter_3() {
    let out = Command::new(EXPORTER)
        .args(["doctor", "--duration", "forever"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a duration from 1s to 10m"));
    let out = Command::new(EXPORTER)
        .args(["doctor", "--from", "http://127.0.0.1:1/metrics", "--duration", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `cmd` to its end: its exit status, standard output and error, and its peak RSS
/// in bytes (from wait4's rusage of that child alone).
fn run_with_rss(cmd: &mut Command) -> (i32, String, String, u64) {
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, for its rusage
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 on our own child's pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(libc::WIFEXITED(status), "it did not exit: {err}");
    (libc::WEXITSTATUS(status), out, err, usage.ru_maxrss as u64 * 1024)
}

/// Runs doctor in `home`: its exit status, its JSON output and its peak RSS.
fn doctor_with_rss(home: &Netns, args: &[&str]) -> (i32, String, u64) {
    let (code, out, _, rss) = run_with_rss(home.cmd(EXPORTER).args(["doctor", "--format", "json"]).args(args));
    (code, out, rss)
}

#[test]
fn a_fake_kube_proxy_with_an_endless_or_blocking_config_cannot_hang_or_bloat_doctor() {
    let _s = serial();
    let home = Netns::new("dockpbad");
    let fifo = std::env::temp_dir().join(format!("netpressure-kp-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    common::run(Command::new("mkfifo").arg(&fifo));
    // A YAML alias bomb: 370 bytes that expand to 387 million strings (422 MB of doctor,
    // or OOM-killed, before aliases were refused).
    let bomb = std::env::temp_dir().join(format!("netpressure-kp-bomb-{}.yaml", std::process::id()));
    std::fs::write(&bomb, common::yaml_alias_bomb()).unwrap();
    for config in [
        "/dev/zero".to_string(),
        fifo.display().to_string(),
        bomb.display().to_string(),
    ] {
        // Any local user can start a process named kube-proxy with such a --config.
        let kp = fake_kube_proxy(&[&format!("--config={config}")]);
        let started = std::time::Instant::now();
        let (code, out, rss) = doctor_with_rss(&home, &["--duration", "1s"]);
        let took = started.elapsed();
        drop(kp);
        eprintln!("kube-proxy --config={config}: doctor exited {code} after {took:?}, peak RSS {rss}");
        assert!(code == 0 || code == 1, "{out}");
        // Its defaults stand in for the unreadable file.
        let k: Vec<Found> = findings(&out)
            .into_iter()
            .filter(|x| x.check == "conntrack-kube-proxy")
            .collect();
        assert_eq!(k.len(), 1, "{out}");
        assert!(k[0].evidence.contains("32768 per core"), "{k:?}");
        assert!(rss < 128 << 20, "doctor's RSS reached {rss} bytes reading {config}");
        assert!(took < Duration::from_secs(30), "{took:?}");
    }
    let _ = std::fs::remove_file(&fifo);
    let _ = std::fs::remove_file(&bomb);
}

/// A CA and a certificate for 127.0.0.1 it signed, made by openssl in `dir`.
fn server_certificate(dir: &std::path::Path) {
    let sh = |script: &str| common::run(Command::new("sh").current_dir(dir).args(["-c", script]));
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
        -days 2 -subj /CN=test-ca 2>&1",
    );
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
        -subj /CN=server 2>&1 && printf 'subjectAltName=IP:127.0.0.1\\n' > server.ext && \
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 7 -days 2 \
        -extfile server.ext -out server.crt 2>&1",
    );
}

#[test]
fn doctor_from_a_hostile_server_fails_clearly_within_its_deadline_and_memory() {
    let dir = std::env::temp_dir().join(format!("netpressure-hostile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    server_certificate(&dir);
    // A real exposition, so that a cut one would parse (and could read as "ok").
    let body = format!("{}/fuzz/corpus/exposition/scrape-no-netns", env!("CARGO_MANIFEST_DIR"));
    let script = format!("{}/tests/support/hostile_http.py", env!("CARGO_MANIFEST_DIR"));
    for (mode, says) in [
        ("silent", "no answer within 3 s"),
        ("drip", "the whole answer did not come within 3 s (--from.timeout)"),
        ("short", "the body was cut short"),
        ("chunked-cut", "the body was cut short"),
        ("tls-no-close-notify", "the body was cut short"),
        ("endless", "not an exporter's exposition"),
        (
            "redirect",
            "HTTP status 302 redirecting to http://127.0.0.1:1/metrics: not followed",
        ),
    ] {
        let mut server = Command::new("python3");
        server.args([&script, mode, &body]);
        if mode.starts_with("tls") {
            server.args([dir.join("server.crt"), dir.join("server.key")]);
        }
        let mut server = server.stdout(Stdio::piped()).spawn().unwrap();
        let mut port = String::new();
        let mut out = server.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while out.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
            port.push(byte[0] as char);
        }
        let _server = Killed(server);
        let scheme = if mode.starts_with("tls") { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}/metrics");
        let ca = dir.join("ca.crt");
        let started = std::time::Instant::now();
        let (code, _, err, rss) = run_with_rss(
            Command::new(EXPORTER)
                .args(["doctor", "--duration", "1s", "--from.timeout", "3s", "--from", &url])
                .arg(format!("--from.ca-file={}", ca.display())),
        );
        let took = started.elapsed();
        eprintln!("{mode}: exit {code} after {took:?}, peak RSS {rss}: {}", err.trim());
        assert_eq!(code, 3, "{mode}: {err}");
        assert!(err.contains(says), "{mode}: wanted {says:?} in {err}");
        assert!(took < Duration::from_secs(6), "{mode}: {took:?}");
        assert!(rss < 160 << 20, "{mode}: peak RSS {rss}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
