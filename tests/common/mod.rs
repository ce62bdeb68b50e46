//! Test support: network namespaces the tests create and remove, the exporter binary
//! started inside one, HTTP scrapes from inside the namespace, and the guard that lowers
//! the global `nf_conntrack_max` and always restores it.
#![allow(dead_code, unsafe_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

pub const EXPORTER: &str = env!("CARGO_BIN_EXE_netpressure_exporter");
pub const PORT: u16 = 9861;

/// Runs a command and panics with its output if it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace made for one test, deleted (with everything in it) on drop.
pub struct Netns {
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "np-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]));
        ns
    }

    /// The `netns` label the exporter gives this namespace's series (its inode), with
    /// `more` labels after it.
    pub fn label(&self, more: &str) -> String {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(format!("/run/netns/{}", self.name)).unwrap().ino();
        if more.is_empty() {
            format!(r#"netns="{ino}""#)
        } else {
            format!(r#"netns="{ino}",{more}"#)
        }
    }

    /// A namespace whose output hook has an nftables `ct state` rule, so that conntrack
    /// tracks every flow in it (conntrack hooks are registered per namespace on demand).
    ///
    /// The scrape port is exempt (`notrack` before conntrack sees it): a full table drops
    /// every new flow in the namespace, and the test's own scrapes must still get through.
    pub fn with_conntrack(tag: &str) -> Self {
        let ns = Self::new(tag);
        ns.sh(&format!(
            "nft add table inet np \\
             && nft add chain inet np raw '{{ type filter hook output priority raw; }}' \\
             && nft add rule inet np raw tcp dport {PORT} notrack \\
             && nft add rule inet np raw tcp sport {PORT} notrack \\
             && nft add chain inet np out '{{ type filter hook output priority 0; }}' \\
             && nft add rule inet np out ct state new,established accept"
        ));
        ns
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    pub fn sh(&self, script: &str) -> Output {
        run(self.cmd("sh").args(["-c", script]))
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it creates stay in
    /// the namespace after it returns.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        enter(&self.name, f)
    }

    /// This namespace's entry count, straight from the kernel.
    pub fn conntrack_count(&self) -> u64 {
        let out = self.sh("cat /proc/sys/net/netfilter/nf_conntrack_count");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

/// Runs `f` on a thread inside the named namespace.
pub fn enter<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    thread::spawn(move || {
        let fd = File::open(&path).unwrap();
        // SAFETY: a valid namespace fd; setns only changes this thread's namespace.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Established TCP connections on loopback inside a namespace, held open.
pub struct Flows {
    pub opened: usize,
    pub failed: usize,
    conns: Vec<TcpStream>,
    listener: Option<TcpListener>,
}

impl Flows {
    /// Listens on 127.0.0.1:`port` in `ns` and opens `n` connections to it, each given
    /// `timeout` to complete (a full conntrack table drops the SYN, so those time out).
    pub fn open(ns: &Netns, port: u16, n: usize, timeout: Duration) -> Self {
        ns.enter(move || {
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut conns = Vec::new();
            let mut failed = 0;
            for _ in 0..n {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(c) => conns.push(c),
                    Err(_) => failed += 1,
                }
            }
            Flows {
                opened: conns.len(),
                failed,
                conns,
                listener: Some(listener),
            }
        })
    }

    pub fn close(&mut self) {
        self.conns.clear();
        self.listener = None;
    }
}

/// Sets a global sysctl (one only the initial namespace has) for one test and restores
/// it on drop, even when the test panics. An exclusive lock on `/tmp/netpressure-LOCK.lock`
/// serialises every test that sets it, across test threads, test binaries and the
/// end-to-end script.
pub struct GlobalSysctlGuard {
    path: &'static str,
    old: String,
    _lock: File,
}

impl GlobalSysctlGuard {
    pub fn set(path: &'static str, lock: &str, value: u64) -> Self {
        let name = lock;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("/tmp/netpressure-{name}.lock"))
            .unwrap();
        // SAFETY: flock on a file we own; blocks until no other test holds it.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0);
        let old = std::fs::read_to_string(path).unwrap().trim().to_string();
        std::fs::write(path, value.to_string()).unwrap();
        Self { path, old, _lock: lock }
    }
}

impl Drop for GlobalSysctlGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.old);
    }
}

/// Lowers `nf_conntrack_max` (global) for one test; see [`GlobalSysctlGuard`].
pub struct ConntrackMaxGuard;

impl ConntrackMaxGuard {
    pub fn set(value: u64) -> GlobalSysctlGuard {
        // tests/e2e/alerting.py takes the same lock.
        GlobalSysctlGuard::set("/proc/sys/net/netfilter/nf_conntrack_max", "conntrack-max", value)
    }
}

/// The exporter binary running inside a namespace, stopped on drop.
pub struct Exporter {
    child: Child,
    /// The namespace it listens in; `None`: the test's own (the node's).
    ns_name: Option<String>,
    port: u16,
}

impl Exporter {
    /// Starts `netpressure_exporter` in `ns` on 127.0.0.1:PORT and waits until ready.
    pub fn start(ns: &Netns, extra: &[&str]) -> Self {
        Self::start_with(ns, None, extra)
    }

    /// As [`Exporter::start`], but through `capsh --drop=CAPS` first.
    pub fn start_with(ns: &Netns, drop_caps: Option<&str>, extra: &[&str]) -> Self {
        let listen = format!("127.0.0.1:{PORT}");
        let mut args = vec![
            "--web.listen-address".to_string(),
            listen,
            "--sample.interval".into(),
            "100ms".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut cmd = match drop_caps {
            None => {
                let mut c = ns.cmd(EXPORTER);
                c.args(&args);
                c
            }
            Some(caps) => {
                let mut c = ns.cmd("capsh");
                let line = std::iter::once(EXPORTER.to_string())
                    .chain(args)
                    .collect::<Vec<_>>()
                    .join(" ");
                c.args([
                    format!("--drop={caps}"),
                    "--".into(),
                    "-c".into(),
                    format!("exec {line}"),
                ]);
                c
            }
        };
        Self::start_cmd(&mut cmd)
    }

    /// Starts the exporter with a command line of the test's own (it must listen on
    /// 127.0.0.1:PORT inside the namespace `ip netns exec` names).
    pub fn start_cmd(cmd: &mut Command) -> Self {
        let ns_name = cmd
            .get_args()
            .nth(2)
            .and_then(|a| a.to_str())
            .expect("an `ip netns exec NAME ...` command")
            .to_string();
        Self::spawn(cmd, Some(ns_name), PORT)
    }

    /// Starts the exporter with a command line of the test's own in the test's own
    /// network namespace; it must listen on 127.0.0.1:`port`.
    pub fn start_here(cmd: &mut Command, port: u16) -> Self {
        Self::spawn(cmd, None, port)
    }

    fn spawn(cmd: &mut Command, ns_name: Option<String>, port: u16) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let exp = Self { child, ns_name, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = exp.get("/-/ready") {
                if r.status == 200 {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "exporter did not become ready");
            thread::sleep(Duration::from_millis(50));
        }
        exp
    }

    /// One HTTP/1.1 GET from inside the namespace.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let connect = move || TcpStream::connect_timeout(&addr, Duration::from_secs(2));
        let stream = match &self.ns_name {
            Some(name) => enter(name, connect)?,
            None => connect()?,
        };
        http_exchange(stream, &req)
    }

    pub fn get(&self, path: &str) -> std::io::Result<Response> {
        self.get_with(path, &[])
    }

    /// The body of `/metrics`, after the strict exposition check ([`check_exposition`]).
    pub fn scrape(&self) -> String {
        let r = self.get("/metrics").unwrap();
        assert_eq!(r.status, 200);
        checked(String::from_utf8(r.body).unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the exporter and returns what it logged.
    pub fn stop(mut self) -> (Option<i32>, String) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code(), err)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn http_exchange(mut stream: TcpStream, req: &str) -> std::io::Result<Response> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// `body` after [`check_exposition`]; panics with the reason and the body otherwise.
pub fn checked(body: String) -> String {
    if let Err(e) = check_exposition(&body) {
        panic!("the exposition fails the strict check: {e}\n{body}");
    }
    body
}

/// The value of the series `name{labels}` in a text exposition (`labels` exactly as
/// rendered, e.g. `source="conntrack"`, or "" for none).
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.rsplit_once(' ').filter(|(k, _)| *k == key).map(|(_, v)| v))
        .map(|v| v.parse().unwrap())
}

/// Polls the exporter until `pred` holds for a scrape, or panics with the last body.
pub fn scrape_until(exp: &Exporter, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = exp.scrape();
        if pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last scrape:\n{body}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `n` connections to 127.0.0.1:`port`, each closed by the client first and then by
/// the server, so that the client side holds `n` TIME_WAIT sockets (fewer when the
/// namespace's `tcp_max_tw_buckets` is lower). Call inside [`Netns::enter`].
pub fn client_closed_connections(port: u16, n: usize) {
    let l = listen_with_backlog(port, 512);
    let server = thread::spawn(move || {
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            // Read to EOF, then close: the client closed first, so it holds TIME_WAIT.
            let _ = s.read_to_end(&mut Vec::new());
        }
    });
    for _ in 0..n {
        drop(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    server.join().unwrap();
}

/// A TCP listener on 127.0.0.1:`port` with an explicit `listen()` backlog (std always
/// asks for 128). Call inside [`Netns::enter`].
pub fn listen_with_backlog(port: u16, backlog: i32) -> TcpListener {
    listen_on(port, backlog, false)
}

/// As [`listen_with_backlog`], one socket of an SO_REUSEPORT group (each has its own
/// accept queue; the kernel spreads connections over them by hash).
pub fn listen_reuseport(port: u16, backlog: i32) -> TcpListener {
    listen_on(port, backlog, true)
}

fn listen_on(port: u16, backlog: i32, reuseport: bool) -> TcpListener {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own; on success ownership moves to
    // the TcpListener, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            std::ptr::addr_of!(one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        if reuseport {
            let rc = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEPORT,
                std::ptr::addr_of!(one).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(rc, 0);
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::bind(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "bind {port}: {}", std::io::Error::last_os_error());
        assert_eq!(libc::listen(fd, backlog), 0);
        TcpListener::from_raw_fd(fd)
    }
}

/// Opens `n` connections to 127.0.0.1:`port`, each given `timeout`; returns the ones
/// that completed. Call inside [`Netns::enter`].
pub fn connect_many(port: u16, n: usize, timeout: Duration) -> Vec<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, timeout).ok())
        .collect()
}

/// The strict check every test scrape goes through: the whole exposition, not one line
/// of it. Each family has one HELP then one TYPE, then its samples, contiguous;
/// families are sorted by name and a family's series by their rendered labels (the
/// exporter's deterministic order), which also rules out duplicate series; label names
/// are valid and unique in a series, label values and HELP text escaped as the text
/// format (0.0.4) requires; values parse; counters end in `_total` and gauges do not.
pub fn check_exposition(text: &str) -> Result<(), String> {
    let mut family: Option<(String, String)> = None; // (name, type)
    let mut help_for: Option<String> = None;
    let mut last_family: Option<String> = None;
    let mut last_labels: Option<String> = None;
    let mut samples_in_family = 0usize;
    let mut seen_in_family = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |what: String| format!("line {}: {what}: {line}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if family.is_some() && samples_in_family == 0 {
                return Err(at("previous family has no samples".into()));
            }
            let (name, help) = rest.split_once(' ').ok_or_else(|| at("HELP without text".into()))?;
            check_escapes(help, false).map_err(at)?;
            if let Some(prev) = &last_family {
                if name <= prev.as_str() {
                    return Err(at(format!("family {name} not after {prev} (sorted, each once)")));
                }
            }
            help_for = Some(name.to_string());
            family = None;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| at("TYPE without a type".into()))?;
            if help_for.as_deref() != Some(name) {
                return Err(at("TYPE not right after its HELP".into()));
            }
            match kind {
                "counter" if !name.ends_with("_total") => return Err(at("counter without _total".into())),
                "gauge" if name.ends_with("_total") => return Err(at("gauge named _total".into())),
                "counter" | "gauge" | "histogram" => {}
                _ => return Err(at(format!("unexpected type {kind}"))),
            }
            help_for = None;
            family = Some((name.to_string(), kind.to_string()));
            last_family = Some(name.to_string());
            last_labels = None;
            seen_in_family.clear();
            samples_in_family = 0;
        } else if line.starts_with('#') || line.is_empty() {
            return Err(at("unexpected comment or empty line".into()));
        } else {
            let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
            if !matches!(value, "NaN" | "+Inf" | "-Inf") && value.parse::<f64>().is_err() {
                return Err(at("value does not parse".into()));
            }
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (
                    name,
                    rest.strip_suffix('}')
                        .ok_or_else(|| at("label set not closed".into()))?,
                ),
                None => (series, ""),
            };
            let Some((fname, kind)) = &family else {
                return Err(at("sample before its family's HELP and TYPE".into()));
            };
            let histogram = kind == "histogram";
            let own = if histogram {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(fname.as_str()))
            } else {
                name == fname
            };
            if !own {
                return Err(at(format!(
                    "sample of {name} inside family {fname} (families contiguous)"
                )));
            }
            check_labels(labels).map_err(at)?;
            if histogram {
                // A histogram's buckets go by increasing `le`, not by text: only
                // duplicates are checked.
                let key = format!("{name}{{{labels}}}");
                if !seen_in_family.insert(key) {
                    return Err(at("duplicate series".into()));
                }
            } else {
                if let Some(prev) = &last_labels {
                    if labels <= prev.as_str() {
                        return Err(at(format!("series not after {{{prev}}}: duplicate or unsorted")));
                    }
                }
                last_labels = Some(labels.to_string());
            }
            samples_in_family += 1;
        }
    }
    if help_for.is_some() || (family.is_some() && samples_in_family == 0) {
        return Err("the last family has no samples".into());
    }
    if last_family.is_none() {
        return Err("no family at all".into());
    }
    Ok(())
}

/// Only `\\`, `\n` (and `\"` in label values) may follow a backslash; a label value
/// may not hold a bare `"` or newline.
fn check_escapes(s: &str, label_value: bool) -> Result<(), String> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\' | 'n') => {}
                Some('"') if label_value => {}
                other => return Err(format!("bad escape \\{other:?}")),
            },
            '\n' => return Err("raw newline".into()),
            '"' if label_value => return Err("unescaped quote".into()),
            _ => {}
        }
    }
    Ok(())
}

/// `a="x",b="y"`: valid, unique names; escaped values.
fn check_labels(labels: &str) -> Result<(), String> {
    let mut names = Vec::new();
    let mut rest = labels;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").ok_or("label without =\"")?;
        let valid = name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if name.is_empty() || !valid || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        if names.contains(&name) {
            return Err(format!("label {name} twice"));
        }
        names.push(name);
        // The value ends at the first quote not escaped by a backslash.
        let bytes = after.as_bytes();
        let mut i = 0;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        if i >= bytes.len() {
            return Err("label value not closed".into());
        }
        check_escapes(&after[..i], true)?;
        rest = &after[i + 1..];
        if !rest.is_empty() {
            rest = rest.strip_prefix(',').ok_or("labels not separated by a comma")?;
            if rest.is_empty() {
                return Err("trailing comma".into());
            }
        }
    }
    Ok(())
}

/// Runs the exporter with `--web.config.file=PATH` (on a port the kernel picks), as a
/// start that must fail: its exit status and standard error.
pub fn start_refused(web_config: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(EXPORTER)
        .args(["--web.listen-address=127.0.0.1:0", "--no-collector.netns"])
        .arg(format!("--web.config.file={}", web_config.display()))
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A kubepods cgroup made for the test, removed on drop (after its processes exit).
pub struct Cgroup {
    /// The directories this test made (removed on drop); a leaf left by an earlier run
    /// that was killed is used as it is.
    dirs: Vec<PathBuf>,
    leaf: PathBuf,
}

impl Cgroup {
    pub fn create(root: &Path, rel: &str) -> Self {
        let mut dirs = Vec::new();
        let mut p = root.to_path_buf();
        for part in rel.split('/') {
            p.push(part);
            if !p.exists() {
                std::fs::create_dir(&p).unwrap();
                dirs.push(p.clone());
            }
        }
        Self { dirs, leaf: p }
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.leaf.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first cgroup layout this machine offers for a made-up pod: (root, path of the
/// container's cgroup under it, pod UID).
pub fn pod_cgroup_layout() -> (PathBuf, String, &'static str) {
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let root = Path::new(root);
        if root.join("cgroup.procs").exists() && (root.ends_with("unified") || root.join("cgroup.controllers").exists())
        {
            let uid = "7c1b2a3e-4d5f-4a6b-8c7d-9e0f1a2b3c4d";
            let rel = format!(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-89ab.scope",
                uid.replace('-', "_")
            );
            return (root.to_path_buf(), rel, uid);
        }
    }
    let uid = "2f4e6a8c-0b1d-4e3f-9a5b-7c9d1e3f5a7b";
    (
        PathBuf::from("/sys/fs/cgroup/pids"),
        format!("kubepods/burstable/pod{uid}/cdef"),
        uid,
    )
}

/// `a` and `b` joined by a veth pair, `a_addr` and `b_addr` (/24) on its ends.
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str, tag: &str) {
    let (ea, eb) = (format!("np{tag}a"), format!("np{tag}b"));
    run(std::process::Command::new("ip").args([
        "link", "add", &ea, "netns", &a.name, "type", "veth", "peer", "name", &eb, "netns", &b.name,
    ]));
    for (ns, dev, addr) in [(a, &ea, a_addr), (b, &eb, b_addr)] {
        ns.sh(&format!("ip addr add {addr}/24 dev {dev} && ip link set {dev} up"));
    }
}

/// A YAML "billion laughs": nine levels of nine aliases, 9^9 copies of a string once
/// expanded, in under 400 bytes.
pub fn yaml_alias_bomb() -> String {
    let mut bomb = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        let refs = vec![format!("*{prev}"); 9].join(",");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    bomb
}

/// A connection from `from` (any port) to `to`, opened inside the calling thread's
/// namespace.
pub fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        unreachable!("IPv4 only")
    };
    let sockaddr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a new socket, owned by the stream below from here on.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is ours and open.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (local, remote) = (sockaddr(from, 0), sockaddr(to.ip().octets(), to.port()));
    // SAFETY: valid sockaddr_in values of the length given.
    if unsafe { libc::bind(fd, (&raw const local).cast(), len) } != 0
        || unsafe { libc::connect(fd, (&raw const remote).cast(), len) } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}
