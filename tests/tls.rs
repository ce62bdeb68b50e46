//! `--web.config.file` against real clients: Prometheus scraping over TLS with basic
//! auth and a client certificate, curl and `openssl s_client` for the handshakes, a
//! certificate rotated the way kubelet updates a mounted Secret. Certificates are made
//! by `openssl` for each test, passwords hashed by `htpasswd` (as the toolkit's docs
//! tell users to). Each test runs in a network namespace of its own.

#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{checked, metric, run, Netns, EXPORTER, PORT};

/// A CA, a server certificate for 127.0.0.1 and localhost, and client certificates,
/// made with openssl in a directory removed on drop.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("netpressure-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Self { dir };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.issue("ca", "server", 0x1001, "DNS:localhost,IP:127.0.0.1");
        pki.issue("ca", "client", 0x2001, "DNS:prometheus.test");
        pki.issue("ca", "stranger", 0x2002, "DNS:someone-else.test");
        pki.issue("other-ca", "untrusted", 0x2003, "DNS:prometheus.test");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn openssl(&self, args: &str) {
        run(Command::new("sh")
            .current_dir(&self.dir)
            .args(["-c", &format!("openssl {args} 2>&1")]));
    }

    fn ca(&self, name: &str) {
        self.openssl(&format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key \
             -out {name}.crt -days 2 -subj /CN={name}"
        ));
    }

    /// A certificate `name.crt` (and key) signed by `ca`, with this serial and SAN.
    fn issue(&self, ca: &str, name: &str, serial: u32, san: &str) {
        self.openssl(&format!(
            "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}"
        ));
        std::fs::write(self.path(&format!("{name}.ext")), format!("subjectAltName={san}\n")).unwrap();
        self.openssl(&format!(
            "x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -set_serial {serial} -days 2 \
             -extfile {name}.ext -out {name}.crt"
        ));
    }
}

impl Pki {
    /// curl's arguments for the client certificate and user prom's password.
    fn client_curl_args(&self) -> Vec<String> {
        let path = |name: &str| self.path(name).to_str().unwrap().to_string();
        [
            "-u",
            "prom:s3cret",
            "--cert",
            &path("client.crt"),
            "--key",
            &path("client.key"),
        ]
        .map(str::to_string)
        .to_vec()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A bcrypt hash of `password`, as `htpasswd` makes it.
fn htpasswd(password: &str) -> String {
    let out = run(Command::new("htpasswd").args(["-nbBC", "10", "", password]));
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .trim_start_matches(':')
        .to_string()
}

/// The exporter in `ns` with `--web.config.file`, logging to a file; ready when
/// `/-/ready` answers over HTTPS (verified against the test CA, with `curl_args`).
struct TlsExporter {
    child: Child,
    log: PathBuf,
}

impl TlsExporter {
    fn start(ns: &Netns, pki: &Pki, web_config: &Path, curl_args: &[&str]) -> Self {
        let log = pki.path("exporter.log");
        let child = ns
            .cmd(EXPORTER)
            .args([
                "--web.listen-address",
                &format!("127.0.0.1:{PORT}"),
                "--no-collector.netns",
            ])
            .arg(format!("--web.config.file={}", web_config.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let exp = Self { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(curl_args);
        let ready = url("/-/ready");
        args.push(&ready);
        while curl(ns, pki, &args).stdout != b"200" {
            assert!(
                Instant::now() < deadline,
                "the exporter did not become ready over HTTPS: {}",
                exp.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        exp
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log says `what` (the exporter's own evidence).
    fn wait_log(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(what) {
            assert!(Instant::now() < deadline, "the log never said {what:?}: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for TlsExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scrapes over HTTPS until `pred` holds: self-metrics come from the sampler's next
/// snapshot, a few hundred milliseconds after the event they count.
fn scrape_until(ns: &Netns, pki: &Pki, args: &[&str], what: &str, pred: impl Fn(&str) -> bool) -> String {
    let mut all = args.to_vec();
    let metrics = url("/metrics");
    all.push(&metrics);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = checked(status(&curl(ns, pki, &all)));
        if pred(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn url(path: &str) -> String {
    format!("https://127.0.0.1:{PORT}{path}")
}

/// curl inside `ns`, trusting the test CA; the output whatever the exit status.
fn curl(ns: &Netns, pki: &Pki, args: &[&str]) -> Output {
    ns.cmd("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(pki.path("ca.crt"))
        .args(args)
        .output()
        .unwrap()
}

fn status(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The serial of the certificate the server presents now, from a fresh handshake.
fn served_serial(ns: &Netns, pki: &Pki) -> String {
    let out = ns.sh(&format!(
        "openssl s_client -connect 127.0.0.1:{PORT} -CAfile {} </dev/null 2>/dev/null | openssl x509 -noout -serial",
        pki.path("ca.crt").display()
    ));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Prometheus in `ns` with `scrape_configs`, storing in a directory removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    ns: String,
}

const PROM_PORT: u16 = 19090;

impl Prometheus {
    fn start(ns: &Netns, dir: &Path, scrape_configs: &str) -> Self {
        let dir = dir.join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n{scrape_configs}"),
        )
        .unwrap();
        run(Command::new("promtool").arg("check").arg("config").arg(&config));
        let child = ns
            .cmd("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{PROM_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let prom = Self {
            child,
            dir,
            ns: ns.name.clone(),
        };
        prom.wait("Prometheus ready", |p| p.api("/-/ready").contains("Ready"));
        prom
    }

    fn api(&self, path: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "5", "-g"])
            .arg(format!("http://127.0.0.1:{PROM_PORT}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait(&self, what: &str, mut pred: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pred(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                self.api("/api/v1/targets")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The active target of `job` as the JSON text of its object in `/api/v1/targets`.
    fn target(&self, job: &str) -> Option<String> {
        let targets = self.api("/api/v1/targets?state=active");
        targets
            .split("{\"discoveredLabels\"")
            .find(|t| t.contains(&format!("\"scrapePool\":\"{job}\"")))
            .map(str::to_string)
    }

    /// Waits until Prometheus has scraped `job` at least once (its own evidence: the
    /// target's health is no longer unknown), and returns the target.
    fn scraped(&self, job: &str) -> String {
        self.wait(&format!("a scrape of {job}"), |p| {
            p.target(job).is_some_and(|t| !t.contains("\"health\":\"unknown\""))
        });
        self.target(job).unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A web config with TLS and the given extra TLS lines, and basic auth for `prom`.
fn web_config(pki: &Pki, tls_extra: &str, password: &str) -> PathBuf {
    let path = pki.path("web.yml");
    std::fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{tls_extra}\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  prom: \"{}\"\n",
            htpasswd(password)
        ),
    )
    .unwrap();
    path
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_a_required_client_certificate() {
    let ns = Netns::new("tlsprom");
    let pki = Pki::new("prom");
    let config = web_config(
        &pki,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
         client_allowed_sans: [prometheus.test]\n",
        "s3cret",
    );
    let cert_args = pki.client_curl_args();
    let cert_args: Vec<&str> = cert_args.iter().map(String::as_str).collect();
    let exp = TlsExporter::start(&ns, &pki, &config, &cert_args);

    let dir = pki.dir.display();
    let job = |name: &str, scheme: &str, cert: &str, password: &str| {
        let cert = match cert {
            "" => String::new(),
            c => format!("      cert_file: {dir}/{c}.crt\n      key_file: {dir}/{c}.key\n"),
        };
        format!(
            "  - job_name: {name}\n    scheme: {scheme}\n    tls_config:\n      ca_file: {dir}/ca.crt\n{cert}\
             \x20   basic_auth:\n      username: prom\n      password: {password}\n\
             \x20   static_configs:\n      - targets: ['127.0.0.1:{PORT}']\n"
        )
    };
    let prom = Prometheus::start(
        &ns,
        &pki.dir,
        &[
            job("good", "https", "client", "s3cret"),
            job("wrong_password", "https", "client", "nope"),
            job("no_client_cert", "https", "", "s3cret"),
            job("san_not_allowed", "https", "stranger", "s3cret"),
            job("untrusted_cert", "https", "untrusted", "s3cret"),
            job("plain_http", "http", "", "s3cret"),
        ]
        .concat(),
    );

    let good = prom.scraped("good");
    assert!(good.contains("\"health\":\"up\""), "{good}");
    // Prometheus's own record: up is 1 and a series of the exporter was stored.
    prom.wait("up 1 and a stored series", |p| {
        p.api("/api/v1/query?query=up{job=\"good\"}").contains(",\"1\"]")
            && p.api("/api/v1/query?query=netpressure_build_info{job=\"good\"}")
                .contains(",\"1\"]")
    });
    for (job, error) in [
        ("wrong_password", "401 Unauthorized"),
        ("no_client_cert", ""),
        ("san_not_allowed", ""),
        ("untrusted_cert", ""),
        ("plain_http", "400 Bad Request"),
    ] {
        let t = prom.scraped(job);
        assert!(t.contains("\"health\":\"down\""), "{job}: {t}");
        assert!(t.contains(error), "{job} should fail with {error:?}: {t}");
        prom.wait(&format!("up 0 for {job}"), |p| {
            p.api(&format!("/api/v1/query?query=up{{job=\"{job}\"}}"))
                .contains(",\"0\"]")
        });
    }

    // The exporter's own count of what it refused.
    scrape_until(&ns, &pki, &cert_args, "the refusals counted", |b| {
        metric(b, "netpressure_http_requests_unauthorized_total", "").unwrap_or(0.0) >= 1.0
            && metric(b, "netpressure_http_tls_handshake_errors_total", "").unwrap_or(0.0) >= 4.0
            && metric(b, "netpressure_web_config_last_reload_successful", "") == Some(1.0)
    });
    drop(prom);
    assert!(
        exp.log()
            .contains("TLS on (client certificates: RequireAndVerifyClientCert), basic auth for 1 user(s)"),
        "{}",
        exp.log()
    );
}

#[test]
fn basic_auth_headers_and_probes() {
    let ns = Netns::new("tlsauth");
    let pki = Pki::new("auth");
    let config = web_config(&pki, "", "s3cret");
    let _exp = TlsExporter::start(&ns, &pki, &config, &[]);
    let code = |args: &[&str]| {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        status(&curl(&ns, &pki, &all))
    };
    assert_eq!(code(&[&url("/metrics")]), "401");
    assert_eq!(code(&["-u", "prom:wrong", &url("/metrics")]), "401");
    assert_eq!(code(&["-u", "someone:s3cret", &url("/metrics")]), "401");
    assert_eq!(code(&["-u", "prom:s3cret", &url("/metrics")]), "200");
    assert_eq!(code(&["-u", "prom:s3cret", &url("/")]), "200");
    // Probes carry no credentials; they learn only that the sampler runs.
    assert_eq!(code(&[&url("/-/healthy")]), "200");
    assert_eq!(code(&[&url("/-/ready")]), "200");
    let headers = status(&curl(&ns, &pki, &["-D", "-", "-o", "/dev/null", &url("/metrics")]));
    assert!(
        headers.to_ascii_lowercase().contains("www-authenticate: basic"),
        "{headers}"
    );
    assert!(
        headers.to_ascii_lowercase().contains("x-content-type-options: nosniff"),
        "{headers}"
    );
    // Plain HTTP to the TLS port is told so, and the handshake counter says it too.
    let plain = ns
        .cmd("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{PORT}/metrics"))
        .output()
        .unwrap();
    assert!(
        status(&plain).contains("Client sent an HTTP request to an HTTPS server"),
        "{plain:?}"
    );

    // A new password applies at the next request, on a new connection or not.
    web_config(&pki, "", "n3w");
    assert_eq!(code(&["-u", "prom:n3w", &url("/metrics")]), "200");
    assert_eq!(code(&["-u", "prom:s3cret", &url("/metrics")]), "401");
}

#[test]
fn a_rotated_certificate_is_served_at_the_next_handshake_and_a_broken_one_is_not() {
    let ns = Netns::new("tlsrot");
    let pki = Pki::new("rot");
    // The layout kubelet gives a mounted Secret: files are symlinks through `..data`,
    // and an update swaps `..data` to a new directory in one rename.
    let secret = pki.path("secret");
    let publish = |version: &str, cert: &str, key: &str| {
        let dir = secret.join(format!("..{version}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(pki.path(cert), dir.join("tls.crt")).unwrap();
        std::fs::copy(pki.path(key), dir.join("tls.key")).unwrap();
        let tmp = secret.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
        std::fs::rename(&tmp, secret.join("..data")).unwrap();
    };
    std::fs::create_dir_all(&secret).unwrap();
    publish("v1", "server.crt", "server.key");
    std::os::unix::fs::symlink("..data/tls.crt", secret.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", secret.join("tls.key")).unwrap();
    let config = pki.path("web.yml");
    std::fs::write(
        &config,
        "tls_server_config:\n  cert_file: secret/tls.crt\n  key_file: secret/tls.key\n",
    )
    .unwrap();
    let exp = TlsExporter::start(&ns, &pki, &config, &[]);
    assert_eq!(served_serial(&ns, &pki), "serial=1001");

    // cert-manager renews: a new certificate and key, published in one swap.
    pki.issue("ca", "renewed", 0x1002, "DNS:localhost,IP:127.0.0.1");
    publish("v2", "renewed.crt", "renewed.key");
    assert_eq!(
        served_serial(&ns, &pki),
        "serial=1002",
        "the next handshake presents the new certificate"
    );

    // A bad update (the key of another certificate) is refused; the last good one
    // is still served and the self-metric says the reload failed.
    publish("v3", "server.crt", "renewed.key");
    assert_eq!(served_serial(&ns, &pki), "serial=1002");
    exp.wait_log("keeping the last good configuration");
    scrape_until(&ns, &pki, &[], "the failed reload in the self-metric", |b| {
        metric(b, "netpressure_web_config_last_reload_successful", "") == Some(0.0)
    });

    // Fixed: served at the next handshake, and the self-metric recovers.
    publish("v4", "server.crt", "server.key");
    assert_eq!(served_serial(&ns, &pki), "serial=1001");
    scrape_until(&ns, &pki, &[], "the good reload in the self-metric", |b| {
        metric(b, "netpressure_web_config_last_reload_successful", "") == Some(1.0)
    });

    // SIGHUP re-reads, logged; the process goes on.
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(exp.pid(), libc::SIGHUP) };
    exp.wait_log("re-read (SIGHUP)");
    assert_eq!(served_serial(&ns, &pki), "serial=1001");
}

#[test]
fn a_bad_web_config_stops_the_start_naming_the_key() {
    let pki = Pki::new("bad");
    for (text, says) in [
        (
            "tls_server_config:\n  cert_file: server.crt\n",
            "tls_server_config.key_file: missing",
        ),
        (
            "tls_server_config:\n  cert_file: nowhere.crt\n  key_file: server.key\n",
            "nowhere.crt: cannot read it",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n",
            "server.crt and key_file",
        ),
        (
            "basic_auth_users:\n  prom: plaintext\n",
            "basic_auth_users.prom: not a bcrypt hash",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS9\n",
            "min_version",
        ),
    ] {
        let path = pki.path("bad.yml");
        std::fs::write(&path, text).unwrap();
        let (code, err) = common::start_refused(&path);
        assert_eq!(code, Some(1), "{text}: {err}");
        assert!(
            err.contains("--web.config.file") && err.contains(says),
            "{text}: wanted {says:?} in {err}"
        );
    }
}

#[test]
fn without_tls_the_rate_limits_and_basic_auth_apply_over_plain_http_and_strangers_spend_their_own() {
    let ns = Netns::new("ratelimit");
    let pki = Pki::new("rate");
    let path = pki.path("web.yml");
    std::fs::write(
        &path,
        format!(
            "basic_auth_users:\n  prom: \"{}\"\nrate_limit:\n  interval: 1h\n  burst: 3\n",
            htpasswd("s3cret")
        ),
    )
    .unwrap();
    // Ready is probed without credentials and outside the rate limit.
    let exp = common::Exporter::start(&ns, &[&format!("--web.config.file={}", path.display())]);
    // base64("prom:s3cret")
    let auth = [("Authorization", "Basic cHJvbTpzM2NyZXQ=")];
    let prometheus = |n: usize| -> Vec<u16> {
        (0..n)
            .map(|_| exp.get_with("/metrics", &auth).unwrap().status)
            .collect()
    };
    // Its first scrape: credentials not yet checked spend a token of the others' bucket
    // (and, once checked, one of the bucket of those who passed).
    assert_eq!(prometheus(1), [200]);
    // Clients without the password spend the others' bucket (the toolkit has one bucket
    // for all, in front of basic auth: 20 of them got Prometheus 429s).
    let wrong = [("Authorization", "Basic cHJvbTp3cm9uZw==")]; // prom:wrong
    let strangers: Vec<u16> = (0..4)
        .map(|i| {
            let headers: &[(&str, &str)] = if i % 2 == 0 { &[] } else { &wrong };
            exp.get_with("/metrics", headers).unwrap().status
        })
        .collect();
    assert_eq!(
        strangers,
        [401, 401, 429, 429],
        "the rest of their burst of 3, then one per hour"
    );
    assert_eq!(
        prometheus(3),
        [200, 200, 429],
        "the rest of its own burst of 3, then one per hour"
    );
    assert_eq!(
        exp.get("/-/healthy").unwrap().status,
        200,
        "probes are not rate limited"
    );
}

#[test]
fn doctor_reads_an_exporter_behind_tls_client_certificates_and_basic_auth() {
    let ns = Netns::new("tlsdoctor");
    let pki = Pki::new("doctor");
    let config = web_config(
        &pki,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
        "s3cret",
    );
    let (client, key) = (pki.path("client.crt"), pki.path("client.key"));
    let cert_args = pki.client_curl_args();
    let cert_args: Vec<&str> = cert_args.iter().map(String::as_str).collect();
    let _exp = TlsExporter::start(&ns, &pki, &config, &cert_args);
    let doctor = |password: &str, with_ca: bool| {
        std::fs::write(pki.path("password"), password).unwrap();
        let mut cmd = ns.cmd(EXPORTER);
        cmd.args([
            "doctor",
            "--duration",
            "1s",
            "--format",
            "json",
            "--from",
            &url("/metrics"),
        ]);
        if with_ca {
            cmd.arg("--from.ca-file").arg(pki.path("ca.crt"));
        }
        cmd.arg("--from.cert-file")
            .arg(&client)
            .arg("--from.key-file")
            .arg(&key)
            .args(["--from.user", "prom", "--from.password-file"])
            .arg(pki.path("password"));
        cmd.output().unwrap()
    };
    let ok = doctor("s3cret\n", true);
    assert!(
        matches!(ok.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains(&format!("\"source\":\"read {} twice", url("/metrics"))),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let wrong = doctor("nope\n", true);
    assert_eq!(wrong.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("HTTP status 401"),
        "{wrong:?}"
    );
    let no_ca = doctor("s3cret\n", false);
    assert_eq!(no_ca.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&no_ca.stderr).contains("https needs --from.ca-file"),
        "{no_ca:?}"
    );
}

#[test]
fn a_yaml_alias_bomb_is_refused_at_start_and_at_reload_and_the_last_good_file_stays() {
    let ns = Netns::new("yamlbomb");
    let pki = Pki::new("bomb");
    let path = pki.path("web.yml");
    std::fs::write(&path, common::yaml_alias_bomb()).unwrap();
    // At start: refused at once, saying why (it got the exporter OOM-killed at a 1 GiB
    // limit in 1.1-1.5 s before).
    let started = Instant::now();
    let (code, err) = common::start_refused(&path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("uses a YAML alias") && err.contains("write the value out"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // At a reload: refused, the running configuration (basic auth) is kept, and the
    // process does not grow.
    std::fs::write(
        &path,
        format!("basic_auth_users:\n  prom: \"{}\"\n", htpasswd("s3cret")),
    )
    .unwrap();
    let exp = common::Exporter::start(&ns, &[&format!("--web.config.file={}", path.display())]);
    let auth = [("Authorization", "Basic cHJvbTpzM2NyZXQ=")];
    assert_eq!(exp.get_with("/metrics", &auth).unwrap().status, 200);
    std::fs::write(&path, common::yaml_alias_bomb()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let r = exp.get_with("/metrics", &auth).unwrap();
        assert_eq!(r.status, 200);
        let body = checked(String::from_utf8(r.body).unwrap());
        if metric(&body, "netpressure_web_config_last_reload_successful", "") == Some(0.0) {
            break body;
        }
        assert!(Instant::now() < deadline, "the reload was not refused:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(metric(&body, "process_resident_memory_bytes", "").unwrap() < f64::from(256u32 << 20));
    assert_eq!(exp.get("/metrics").unwrap().status, 401, "basic auth still on");
    assert_eq!(exp.get_with("/metrics", &auth).unwrap().status, 200);
}

#[test]
fn client_allowed_sans_fails_closed_at_start_at_reload_and_without_a_certificate() {
    let ns = Netns::new("sans");
    let pki = Pki::new("sans");
    let sans = |policy: &str| {
        format!("  client_auth_type: {policy}\n  client_ca_file: ca.crt\n  client_allowed_sans: [prometheus.test]\n")
    };
    const REFUSAL: &str =
        "client_allowed_sans requires client_auth_type RequireAndVerifyClientCert with a client_ca_file";
    // At start: the two policies that let a client in without a certificate, and the one
    // that takes any certificate (a self-signed one from no CA carrying the allowed name
    // got 200 under it: a SAN nobody verified proves nothing).
    for policy in ["RequestClientCert", "VerifyClientCertIfGiven", "RequireAnyClientCert"] {
        let config = web_config(&pki, &sans(policy), "s3cret");
        let (code, err) = common::start_refused(&config);
        assert_eq!(code, Some(1), "{policy}: {err}");
        assert!(err.contains(REFUSAL), "{policy}: {err}");
    }
    let cert_args = pki.client_curl_args();
    let cert_args: Vec<&str> = cert_args.iter().map(String::as_str).collect();
    let metrics = url("/metrics");
    let code = |args: &[&str]| {
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        all.extend_from_slice(args);
        all.push(&metrics);
        status(&curl(&ns, &pki, &all))
    };
    let stranger = [
        "-u",
        "prom:s3cret",
        "--cert",
        pki.path("stranger.crt").to_str().unwrap(),
        "--key",
        pki.path("stranger.key").to_str().unwrap(),
    ]
    .map(str::to_string);
    let stranger: Vec<&str> = stranger.iter().map(String::as_str).collect();
    {
        let policy = "RequireAndVerifyClientCert";
        let config = web_config(&pki, &sans(policy), "s3cret");
        let exp = TlsExporter::start(&ns, &pki, &config, &cert_args);
        assert_eq!(code(&cert_args), "200", "{policy}: an allowed SAN");
        // No certificate: no handshake (curl reports 000), whatever the password.
        assert_eq!(code(&["-u", "prom:s3cret"]), "000", "{policy}: no certificate");
        assert_eq!(code(&stranger), "000", "{policy}: a SAN not allowed");
        // The self-metrics tell these apart: two failed handshakes (no certificate,
        // a SAN not allowed); plain HTTP to the TLS port counted on its own; a
        // connection closed before a byte counted nowhere.
        let plain = ns
            .cmd("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{PORT}/metrics"))
            .output()
            .unwrap();
        assert_eq!(status(&plain), "400");
        ns.enter(|| drop(std::net::TcpStream::connect(("127.0.0.1", PORT)).unwrap()));
        let mut args = cert_args.clone();
        args.insert(0, "-sS");
        scrape_until(&ns, &pki, &args, "the handshake failures counted", |b| {
            metric(b, "netpressure_http_tls_handshake_errors_total", "") == Some(2.0)
                && metric(b, "netpressure_http_tls_plaintext_requests_total", "") == Some(1.0)
        });
        // At reload: the same refusal, and the last good configuration stays.
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace(policy, "VerifyClientCertIfGiven");
        std::fs::write(&config, text).unwrap();
        assert_eq!(code(&["-u", "prom:s3cret"]), "000", "after the refused reload");
        exp.wait_log(REFUSAL);
        assert_eq!(code(&cert_args), "200");
    }
}
