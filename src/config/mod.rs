//! Every flag, its default and its validation. Flags follow the Prometheus exporter
//! style (`--web.listen-address`, `--collector.NAME` / `--no-collector.NAME`, ...).
//! A bad value is one line naming the flag, the value and what is accepted, and exit
//! status 2.

mod flags;
mod values;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::collectors::COLLECTORS;
use crate::procfs::Roots;

/// The default port. The Prometheus wiki's 9100-9999 list has been fully allocated since
/// 2023; 9861 is not the port of any widely deployed exporter (README, "Port").
pub const DEFAULT_PORT: u16 = 9861;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `--web.listen-address`, repeatable: the same endpoint on each.
    pub listen_addresses: Vec<String>,
    /// `--web.systemd-socket`: serve on the sockets systemd passes (`LISTEN_FDS`)
    /// instead of the listen addresses.
    pub systemd_socket: bool,
    pub telemetry_path: String,
    pub max_requests: usize,
    pub max_connections: usize,
    /// `--web.config.file`: TLS, basic auth, headers, rate limit (exporter-toolkit format).
    pub web_config_file: Option<PathBuf>,
    pub roots: Roots,
    pub sample_interval: Duration,
    pub peak_window: Duration,
    /// The enabled collectors, by name, in the registry's order.
    pub sources: Vec<&'static str>,
    pub conntrack_per_cpu: bool,
    /// `--collector.conntrack.breakdown-*`: a table at or above this fill of its limit
    /// (0: always; 1: never) is dumped and broken down at most every interval.
    pub breakdown_threshold: f64,
    pub breakdown_interval: Duration,
    pub breakdown_timeout: Duration,
    pub breakdown_top: usize,
    pub scan_interval: Duration,
    pub listeners_max: usize,
    pub listeners_ports: Option<Vec<(u16, u16)>>,
    pub remotes_top: usize,
    pub processes_top: usize,
    pub softnet_per_cpu: bool,
    pub netns: bool,
    /// `--[no-]netns.node-pass`: the other namespaces' conntrack counts and listeners
    /// from one BPF pass ([`crate::source::pass`]).
    pub node_pass: bool,
    pub netns_sample_interval: Duration,
    pub netns_interval: Duration,
    pub netns_scan_interval: Duration,
    pub netns_max: usize,
    /// `--netns.families`: the families served for other namespaces; `None` for all.
    pub netns_families: Option<Vec<String>>,
    pub pod_logs: PathBuf,
    pub log_level: log::LevelFilter,
    pub log_format: LogFormat,
    /// `--sample.counter-interval`: how often the sources that serve counters are read
    /// (netstat, softnet, the own process, conntrack's per-CPU counters) in the
    /// exporter's own namespace; `--netns.interval` in the others.
    pub counter_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addresses: vec![format!(":{DEFAULT_PORT}")],
            systemd_socket: false,
            telemetry_path: "/metrics".into(),
            max_requests: 40,
            max_connections: 64,
            web_config_file: None,
            roots: Roots::default(),
            sample_interval: Duration::from_millis(250),
            peak_window: Duration::from_secs(60),
            sources: COLLECTORS
                .iter()
                .filter(|c| c.default_enabled)
                .map(|c| c.name)
                .collect(),
            conntrack_per_cpu: false,
            breakdown_threshold: 0.75,
            breakdown_interval: Duration::from_secs(30),
            breakdown_timeout: Duration::from_secs(5),
            breakdown_top: 10,
            scan_interval: Duration::from_secs(5),
            listeners_max: 100,
            listeners_ports: None,
            remotes_top: 20,
            processes_top: 10,
            softnet_per_cpu: false,
            netns: true,
            node_pass: true,
            netns_sample_interval: Duration::from_secs(1),
            netns_interval: Duration::from_secs(10),
            netns_scan_interval: Duration::from_secs(300),
            netns_max: 512,
            netns_families: Some(
                crate::metrics::default_netns_families()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            ),
            pod_logs: PathBuf::from("/var/log/pods"),
            log_level: log::LevelFilter::Info,
            log_format: LogFormat::Logfmt,
            counter_interval: Duration::from_secs(5),
        }
    }
}

/// What the command line asks for instead of a running exporter.
#[derive(Debug)]
pub enum CliExit {
    /// `--help` or `--version`: print to stdout, exit 0.
    Print(String),
    /// A bad flag or value: one line for stderr, exit 2.
    Usage(String),
}

use flags::{command, get};
use values::Families;
pub use values::{parse_duration, parse_ports};

impl Config {
    /// Parses the command line (the first item is the program name).
    ///
    /// # Errors
    /// [`CliExit`] for help, version, or a bad flag.
    pub fn from_args<I, T>(args: I) -> Result<Config, CliExit>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let m = command().try_get_matches_from(args).map_err(|e| match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => CliExit::Print(e.render().to_string()),
            _ => CliExit::Usage(one_line(&e)),
        })?;
        let d = Config::default();
        let disable_defaults = m.get_flag("collector.disable-defaults");
        let sources = COLLECTORS
            .iter()
            .filter(|s| {
                if m.get_flag(&format!("collector.{}", s.name)) {
                    true
                } else if m.get_flag(&format!("no-collector.{}", s.name)) {
                    false
                } else {
                    s.default_enabled && !disable_defaults
                }
            })
            .map(|s| s.name)
            .collect();
        Ok(Config {
            listen_addresses: m
                .get_many::<String>("web.listen-address")
                .map_or(d.listen_addresses, |v| v.cloned().collect()),
            systemd_socket: m.get_flag("web.systemd-socket"),
            telemetry_path: get(&m, "web.telemetry-path").unwrap_or(d.telemetry_path),
            max_requests: get(&m, "web.max-requests").unwrap_or(d.max_requests),
            max_connections: get(&m, "web.max-connections").unwrap_or(d.max_connections),
            web_config_file: get(&m, "web.config.file"),
            roots: Roots {
                procfs: get(&m, "path.procfs").unwrap_or(d.roots.procfs),
                sysfs: get(&m, "path.sysfs").unwrap_or(d.roots.sysfs),
            },
            sample_interval: get(&m, "sample.interval").unwrap_or(d.sample_interval),
            peak_window: get(&m, "sample.peak-window").unwrap_or(d.peak_window),
            sources,
            conntrack_per_cpu: m.get_flag("collector.conntrack.per-cpu"),
            breakdown_threshold: get(&m, "collector.conntrack.breakdown-threshold").unwrap_or(d.breakdown_threshold),
            breakdown_interval: get(&m, "collector.conntrack.breakdown-interval").unwrap_or(d.breakdown_interval),
            breakdown_timeout: get(&m, "collector.conntrack.breakdown-timeout").unwrap_or(d.breakdown_timeout),
            breakdown_top: get(&m, "collector.conntrack.breakdown-top").unwrap_or(d.breakdown_top),
            scan_interval: get(&m, "scan.interval").unwrap_or(d.scan_interval),
            listeners_max: get(&m, "collector.listeners.max").unwrap_or(d.listeners_max),
            listeners_ports: get(&m, "collector.listeners.ports"),
            remotes_top: get(&m, "collector.remotes.top").unwrap_or(d.remotes_top),
            processes_top: get(&m, "collector.processes.top").unwrap_or(d.processes_top),
            softnet_per_cpu: m.get_flag("collector.softnet.per-cpu"),
            netns: !m.get_flag("no-collector.netns"),
            node_pass: !m.get_flag("no-netns.node-pass"),
            netns_sample_interval: get(&m, "netns.sample-interval").unwrap_or(d.netns_sample_interval),
            netns_interval: get(&m, "netns.interval").unwrap_or(d.netns_interval),
            netns_scan_interval: get(&m, "netns.scan-interval").unwrap_or(d.netns_scan_interval),
            netns_max: get(&m, "netns.max").unwrap_or(d.netns_max),
            netns_families: get::<Families>(&m, "netns.families").map_or(d.netns_families, |f| f.0),
            pod_logs: get(&m, "path.pod-logs").unwrap_or(d.pod_logs),
            log_level: get(&m, "log.level").unwrap_or(d.log_level),
            log_format: get(&m, "log.format").unwrap_or(d.log_format),
            counter_interval: get(&m, "sample.counter-interval").unwrap_or(d.counter_interval),
        })
        .and_then(Config::validate)
    }

    fn validate(mut self) -> Result<Config, CliExit> {
        // Other namespaces are never sampled more often than the exporter's own.
        self.netns_sample_interval = self.netns_sample_interval.max(self.sample_interval);
        // A wrong root would otherwise look like a kernel without these files: every
        // source down as "not present", nothing logged above debug.
        let procfs = &self.roots.procfs;
        if let Some(missing) = ["stat", "thread-self/net/netstat"]
            .iter()
            .map(|f| procfs.join(f))
            .find(|p| !p.exists())
        {
            return Err(CliExit::Usage(format!(
                "netpressure_exporter: invalid value {:?} for --path.procfs: {} does not exist; expected the procfs mount of this PID namespace, such as /proc or /host/proc (with hostPID)",
                procfs.display().to_string(),
                missing.display()
            )));
        }
        if !self.roots.sysfs.join("devices").is_dir() {
            return Err(CliExit::Usage(format!(
                "netpressure_exporter: invalid value {:?} for --path.sysfs: {} is not a directory; expected the sysfs mount, such as /sys or /host/sys",
                self.roots.sysfs.display().to_string(),
                self.roots.sysfs.join("devices").display()
            )));
        }
        if self.peak_window < self.sample_interval {
            return Err(CliExit::Usage(format!(
                "netpressure_exporter: --sample.peak-window ({:?}) must be at least --sample.interval ({:?})",
                self.peak_window, self.sample_interval
            )));
        }
        // Two listeners on one address and port would fail to bind ("Address already in
        // use", exit 1) as if another process held it: say which flags collide.
        let split = |a: &str| a.rsplit_once(':').map(|(h, p)| (h.to_string(), p.parse::<u16>().ok()));
        for (i, a) in self.listen_addresses.iter().enumerate() {
            for b in &self.listen_addresses[..i] {
                let (Some((ha, pa)), Some((hb, pb))) = (split(a), split(b)) else {
                    continue;
                };
                if pa == pb && (ha == hb || ha.is_empty() || hb.is_empty()) {
                    let why = if ha == hb {
                        "the same address twice"
                    } else {
                        ":PORT is already every address"
                    };
                    return Err(CliExit::Usage(format!(
                        "netpressure_exporter: --web.listen-address {b} and --web.listen-address {a} overlap ({why}); give each address and port once"
                    )));
                }
            }
        }
        Ok(self)
    }

    pub fn enabled(&self, name: &str) -> bool {
        self.sources.contains(&name)
    }
}

/// Turns a clap error into one line: the flag, the value, and what is accepted.
fn one_line(e: &clap::Error) -> String {
    let ctx = |k| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => Some(v.join(", ")),
        _ => None,
    };
    let arg = ctx(ContextKind::InvalidArg).map(|a| a.split_whitespace().next().unwrap_or("").to_string());
    let value = ctx(ContextKind::InvalidValue);
    let line = match e.kind() {
        ErrorKind::ValueValidation => {
            let why = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default();
            format!(
                "invalid value {:?} for {}: {why}",
                value.unwrap_or_default(),
                arg.unwrap_or_default()
            )
        }
        ErrorKind::InvalidValue => match ctx(ContextKind::ValidValue).filter(|v| !v.is_empty()) {
            Some(valid) => format!(
                "invalid value {:?} for {}: expected one of {valid}",
                value.unwrap_or_default(),
                arg.unwrap_or_default(),
            ),
            // No value at all (`--web.listen-address` last on the line): say what goes
            // there, from the flag's own value name.
            None => {
                let flag = arg.unwrap_or_default();
                let what = command()
                    .get_arguments()
                    .find(|a| a.get_long().is_some_and(|l| flag == format!("--{l}")))
                    .and_then(|a| a.get_value_names().and_then(|v| v.first().map(ToString::to_string)))
                    .unwrap_or_else(|| "a value".into());
                format!("missing value for {flag}: expected {what} (see --help)")
            }
        },
        ErrorKind::UnknownArgument => {
            let hint = ctx(ContextKind::SuggestedArg)
                .map(|s| format!("; did you mean {s}?"))
                .unwrap_or_default();
            format!("unknown flag {}{hint} (see --help)", arg.unwrap_or_default())
        }
        _ => {
            let rendered = e.render().to_string();
            rendered
                .lines()
                .next()
                .unwrap_or("invalid command line")
                .trim_start_matches("error: ")
                .to_string()
        }
    };
    format!("netpressure_exporter: {line}")
}

#[cfg(test)]
mod tests {
    use super::values::{parse_listen_address, parse_telemetry_path};
    use super::*;

    fn usage(args: &[&str]) -> String {
        let mut v = vec!["netpressure_exporter"];
        v.extend_from_slice(args);
        match Config::from_args(v) {
            Err(CliExit::Usage(s)) => s,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn ports() {
        assert_eq!(
            parse_ports("80,443,8000-8100"),
            Ok(vec![(80, 80), (443, 443), (8000, 8100)])
        );
        for bad in ["", "0", "x", "90-80", "1-70000", "80,"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "5", "s", "5x", "-1s", "1.5s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults() {
        let c = Config::from_args(["x"]).unwrap();
        assert_eq!(c.listen_addresses, [":9861"]);
        assert!(!c.systemd_socket);
        let two = Config::from_args([
            "x",
            "--web.listen-address=127.0.0.1:1",
            "--web.listen-address",
            "[::1]:2",
        ])
        .unwrap();
        assert_eq!(two.listen_addresses, ["127.0.0.1:1", "[::1]:2"]);
        // The same address and port twice, or :PORT beside HOST:PORT: a usage error
        // naming both, not "Address already in use" at bind.
        for (a, b) in [("127.0.0.1:9", "127.0.0.1:9"), (":9", "127.0.0.1:9"), ("[::1]:9", ":9")] {
            let flags = [format!("--web.listen-address={a}"), format!("--web.listen-address={b}")];
            let Err(CliExit::Usage(e)) = Config::from_args(std::iter::once("x".to_string()).chain(flags)) else {
                panic!("{a} and {b} accepted");
            };
            assert!(
                e.contains(&format!(
                    "--web.listen-address {a} and --web.listen-address {b} overlap"
                )),
                "{e}"
            );
        }
        let ok = [":9", "127.0.0.1:10"].map(|a| format!("--web.listen-address={a}"));
        assert!(Config::from_args(std::iter::once("x".to_string()).chain(ok)).is_ok());
        assert_eq!(c.sample_interval, Duration::from_millis(250));
        assert!(c.enabled("conntrack"));
    }

    #[test]
    fn collector_flags_last_one_wins() {
        let c = Config::from_args(["x", "--collector.conntrack", "--no-collector.conntrack"]).unwrap();
        assert!(!c.enabled("conntrack"));
        let c = Config::from_args(["x", "--collector.disable-defaults", "--collector.conntrack"]).unwrap();
        assert!(c.enabled("conntrack"));
        assert!(!c.enabled("process"));
    }

    #[test]
    fn bad_values_name_flag_value_and_what_is_accepted() {
        let m = usage(&["--sample.interval", "fast"]);
        assert!(
            m.contains("--sample.interval") && m.contains("\"fast\"") && m.contains("250ms"),
            "{m}"
        );
        assert!(!m.contains('\n'));
        let m = usage(&["--log.level", "loud"]);
        assert!(
            m.contains("--log.level") && m.contains("loud") && m.contains("debug"),
            "{m}"
        );
        let m = usage(&["--web.listen-address", "nope"]);
        assert!(m.contains("--web.listen-address") && m.contains(":9861"), "{m}");
        let m = usage(&["--collector.conntrak"]);
        assert!(
            m.contains("--collector.conntrak") && m.contains("--collector.conntrack"),
            "{m}"
        );
        let m = usage(&["--sample.interval", "10s", "--sample.peak-window", "5s"]);
        assert!(m.contains("--sample.peak-window"), "{m}");
    }

    #[test]
    fn every_flag_refuses_bad_values_in_one_line() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&["--web.telemetry-path", "/m{"], "--web.telemetry-path", "/metrics"),
            (&["--web.telemetry-path", "/{x}"], "--web.telemetry-path", "/metrics"),
            (&["--web.telemetry-path", "/a b"], "--web.telemetry-path", "/metrics"),
            (
                &["--web.telemetry-path", "/a%zz"],
                "--web.telemetry-path",
                "percent-encoded",
            ),
            (
                &["--web.telemetry-path", "/-/metrics"],
                "--web.telemetry-path",
                "/metrics",
            ),
            (&["--web.telemetry-path", "/"], "--web.telemetry-path", "/metrics"),
            (&["--web.listen-address"], "--web.listen-address", "[HOST]:PORT"),
            (
                &["--web.listen-address", "1.2.3.4.5:80"],
                "--web.listen-address",
                ":9861",
            ),
            (&["--web.listen-address", "[::1:80"], "--web.listen-address", ":9861"),
            (&["--web.listen-address", "[zz]:80"], "--web.listen-address", ":9861"),
            (&["--web.listen-address=-bad-:80"], "--web.listen-address", ":9861"),
            (&["--web.listen-address", ":99999"], "--web.listen-address", ":9861"),
            (&["--path.procfs="], "--path.procfs", "/proc"),
            (&["--path.procfs", "/nonexistent"], "--path.procfs", "/proc"),
            (&["--path.procfs", "/tmp"], "--path.procfs", "/host/proc"),
            (&["--path.sysfs="], "--path.sysfs", "directory"),
            (&["--path.sysfs", "/tmp"], "--path.sysfs", "/sys"),
            (&["--path.pod-logs="], "--path.pod-logs", "directory"),
            (&["--sample.interval", "1ms"], "--sample.interval", "10ms"),
            (&["--sample.peak-window", "2h"], "--sample.peak-window", "1h"),
            (&["--scan.interval", "0s"], "--scan.interval", "1s"),
            (&["--netns.interval", "x"], "--netns.interval", "10s"),
            (&["--netns.scan-interval", "1s"], "--netns.scan-interval", "10s"),
            (&["--netns.max", "0"], "--netns.max", "1 to 10000"),
            (
                &["--collector.listeners.max=-1"],
                "--collector.listeners.max",
                "1 to 10000",
            ),
            (
                &["--collector.listeners.ports", "80-"],
                "--collector.listeners.ports",
                "8000-8100",
            ),
            (
                &["--collector.remotes.top", "1e3"],
                "--collector.remotes.top",
                "1 to 10000",
            ),
            (
                &["--collector.processes.top", ""],
                "--collector.processes.top",
                "1 to 10000",
            ),
            (&["--log.level", "trace"], "--log.level", "debug"),
            (&["--log.format"], "--log.format", "FORMAT"),
        ];
        for (args, flag, accepted) in cases {
            let m = usage(args);
            assert!(
                m.contains(flag) && m.contains(accepted) && !m.contains('\n') && !m.ends_with("one of "),
                "{args:?}: {m}"
            );
        }
        for ok in [
            ":9861",
            "127.0.0.1:1",
            "[::1]:9861",
            "localhost:9861",
            "node-1.example:80",
        ] {
            assert!(parse_listen_address(ok).is_ok(), "{ok}");
        }
        for ok in ["/metrics", "/a/b:c*", "/m%7Bx", "/~x"] {
            assert!(parse_telemetry_path(ok).is_ok(), "{ok}");
        }
    }
}
