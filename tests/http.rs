//! The HTTP surface of the real binary, scraped from inside a namespace it runs in, and
//! the command line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::{check_exposition, checked, metric, Exporter, Netns, EXPORTER};

#[test]
fn metrics_is_text_format_and_gzip_on_request() {
    let ns = Netns::new("http");
    let exp = Exporter::start(&ns, &[]);

    let plain = exp.get("/metrics").unwrap();
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(plain.header("content-encoding"), None);
    let text = checked(String::from_utf8(plain.body).unwrap());
    let build_info = format!(
        r#"netpressure_build_info{{version="{}",revision=""#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        text.lines().any(|l| l.starts_with(&build_info) && l.ends_with("} 1")),
        "{text}"
    );
    assert!(text.contains("# TYPE netpressure_conntrack_drop_total counter"));
    assert!(metric(&text, "process_resident_memory_bytes", "").unwrap() > 0.0);

    let gz = exp.get_with("/metrics", &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    let unzipped = checked(unzipped);
    assert!(metric(&unzipped, "netpressure_conntrack_entries_limit", &ns.label("")).is_some());
}

#[test]
fn the_strict_exposition_check_rejects_what_prometheus_would_drop_or_misread() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 1\na_total{x=\"2\"} 2\n\
# HELP b B \\\\ \\n.\n# TYPE b gauge\nb{p=\"q\\\"\\\\\\n\",r=\"\"} NaN\n";
    assert_eq!(check_exposition(ok), Ok(()));
    let head = "# HELP a A.\n# TYPE a gauge\n";
    for (bad, why) in [
        (format!("{head}a{{x=\"1\"}} 1\na{{x=\"1\"}} 1\n"), "duplicate series"),
        (format!("{head}a{{x=\"2\"}} 1\na{{x=\"1\"}} 1\n"), "series out of order"),
        (format!("{head}a 1\n# HELP a A.\n# TYPE a gauge\na 1\n"), "family twice"),
        (
            format!("# HELP b B.\n# TYPE b gauge\nb 1\n{head}a 1\n"),
            "families out of order",
        ),
        (format!("{head}b 1\n"), "sample outside its family"),
        (format!("{head}a{{x=\"a\"b\"}} 1\n"), "unescaped quote"),
        (format!("{head}a{{x=\"\\t\"}} 1\n"), "bad escape"),
        (format!("{head}a{{x=\"1\",x=\"2\"}} 1\n"), "label twice"),
        (format!("{head}a{{1x=\"1\"}} 1\n"), "bad label name"),
        (format!("{head}a one\n"), "bad value"),
        (
            "# HELP a A.\n# TYPE a counter\na 1\n".to_string(),
            "counter without _total",
        ),
        ("# HELP a \\x.\n# TYPE a gauge\na 1\n".to_string(), "bad HELP escape"),
        (head.to_string(), "family without samples"),
    ] {
        assert!(check_exposition(&bad).is_err(), "{why} passed:\n{bad}");
    }
}

#[test]
fn two_scrapes_list_the_same_series_in_the_same_order() {
    let ns = Netns::new("order");
    // Without the sources whose series follow what else runs on the machine (other
    // tests' namespaces and processes come and go).
    let exp = Exporter::start(&ns, &["--no-collector.netns", "--no-collector.processes"]);
    let series = |body: &str| -> Vec<String> {
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
            .collect()
    };
    let first = exp.scrape();
    let taken = |body: &str| metric(body, "netpressure_last_sample_timestamp_seconds", "");
    // A later snapshot, not the same one served twice.
    let second = common::scrape_until(&exp, "a newer snapshot", |b| taken(b) > taken(&first));
    assert_eq!(series(&first), series(&second));
}

#[test]
fn landing_health_readiness_and_404() {
    let ns = Netns::new("pages");
    let exp = Exporter::start(&ns, &["--web.telemetry-path=/custom"]);
    let landing = exp.get("/").unwrap();
    assert_eq!(landing.status, 200);
    let html = String::from_utf8(landing.body).unwrap();
    assert!(
        html.contains("netpressure_exporter") && html.contains(r#"href="/custom""#),
        "{html}"
    );
    assert_eq!(exp.get("/-/healthy").unwrap().status, 200);
    assert_eq!(exp.get("/-/ready").unwrap().status, 200);
    assert_eq!(exp.get("/custom").unwrap().status, 200);
    assert_eq!(exp.get("/metrics").unwrap().status, 404);
    assert_eq!(exp.get("/nope").unwrap().status, 404);
}

#[test]
fn promtool_check_metrics_finds_nothing_on_a_real_scrape() {
    let ns = Netns::with_conntrack("promtool");
    let exp = Exporter::start(&ns, &["--collector.conntrack.per-cpu"]);
    let body = exp.scrape();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}\n---\n{body}"
    );
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let ns = Netns::new("sigterm");
    let exp = Exporter::start(&ns, &[]);
    let (code, log) = exp.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGTERM received"), "{log}");
}

fn bad(args: &[&str]) -> String {
    let out = Command::new(EXPORTER).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty());
    err
}

#[test]
fn bad_flags_exit_2_with_one_line_naming_the_flag() {
    let e = bad(&["--sample.interval", "soon"]);
    assert!(
        e.contains("--sample.interval") && e.contains("soon") && e.contains("250ms"),
        "{e}"
    );
    let e = bad(&["--sample.interval=1ms"]);
    assert!(e.contains("--sample.interval") && e.contains("10ms"), "{e}");
    let e = bad(&["--log.format", "xml"]);
    assert!(e.contains("--log.format") && e.contains("logfmt"), "{e}");
    let e = bad(&["--web.telemetry-path", "metrics"]);
    assert!(e.contains("--web.telemetry-path"), "{e}");
    let e = bad(&["--no-such-flag"]);
    assert!(e.contains("--no-such-flag"), "{e}");
    // Values that used to panic after "listening", exit 1, or say "expected one of ".
    for args in [
        &["--web.telemetry-path=/m{"][..],
        &["--web.telemetry-path=/{x}"],
        &["--web.listen-address"],
        &["--web.listen-address", "1.2.3.4.5:80"],
        &["--path.procfs="],
        &["--path.procfs=/tmp"],
        &["--path.sysfs="],
        &["--path.pod-logs="],
    ] {
        let e = bad(args);
        let flag = args[0].split('=').next().unwrap();
        assert!(e.contains(flag) && !e.trim_end().ends_with("one of"), "{args:?}: {e}");
    }
}

#[test]
fn a_telemetry_path_with_router_syntax_means_itself() {
    let ns = Netns::new("rawpath");
    let exp = Exporter::start(&ns, &["--web.telemetry-path=/m*:x"]);
    let r = exp.get("/m*:x").unwrap();
    assert_eq!(r.status, 200);
    checked(String::from_utf8(r.body).unwrap());
    for other in ["/m", "/mx:x", "/anything", "/metrics"] {
        assert_eq!(exp.get(other).unwrap().status, 404, "{other}");
    }
}

#[test]
fn help_to_a_full_device_fails_without_a_panic() {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = Command::new(EXPORTER).arg("--help").stdout(full).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write") && !err.contains("panicked"), "{err}");
}

#[test]
fn help_and_version_exit_0() {
    let out = Command::new(EXPORTER).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(EXPORTER).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--web.listen-address",
        "--collector.conntrack",
        "--no-collector.conntrack",
        "--log.format",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let ns = Netns::new("inuse");
    let _exp = Exporter::start(&ns, &[]);
    let out = ns
        .cmd(EXPORTER)
        .args(["--web.listen-address", &format!("127.0.0.1:{}", common::PORT)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--web.listen-address") && err.contains("Address already in use"),
        "{err}"
    );
}

#[test]
fn conntrack_top_on_a_file_that_is_not_a_namespace_says_so() {
    // A regular file: setns fails with EINVAL, which is not a missing capability.
    let out = Command::new(EXPORTER)
        .args(["conntrack-top", "--netns", "/etc/hostname"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not a network namespace"), "{err}");
    assert!(!err.contains("CAP_SYS_ADMIN"), "{err}");
}
