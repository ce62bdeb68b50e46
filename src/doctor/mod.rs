//! `netpressure_exporter doctor`: this node's tuning checked against what it lives
//! through. The evidence is what the exporter serves, read twice some seconds apart
//! (counter increases between them, peaks over the window): either by sampling the
//! node here for `--duration`, every namespace the exporter would sample, or by
//! scraping a running exporter (`--from URL`, no privileges needed). The checks
//! ([`checks`]) turn it into findings with the setting to change.
//!
//! Sampling here, the doctor encodes each snapshot in the text format and reads it back
//! ([`expo`]): the checks then see exactly what a scrape serves, through the one path
//! `--from` takes too, at the cost of a parse a few times per run. Its errors are the
//! one-line `String`s it prints (exit 3): nothing branches on their kind.

pub mod checks;
pub mod client;
pub mod expo;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, Command};

use checks::{Evidence, Finding, KubeProxy, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug)]
pub struct Args {
    pub from: Option<String>,
    /// For an `https://` `--from`: the CA to trust, a client certificate and key, and
    /// basic-auth credentials (the password read from a file, never the command line).
    pub from_ca_file: Option<PathBuf>,
    pub from_cert_file: Option<PathBuf>,
    pub from_key_file: Option<PathBuf>,
    pub from_user: Option<String>,
    pub from_password_file: Option<PathBuf>,
    /// The most one read of `--from` may take, connection to last byte.
    pub from_timeout: Duration,
    pub duration: Duration,
    pub format: Format,
    pub procfs: PathBuf,
    pub pod_logs: PathBuf,
}

fn command() -> Command {
    Command::new("doctor")
        .bin_name("netpressure_exporter doctor")
        .about("Check this node's conntrack, listener, port and descriptor tuning against what it is living through")
        .disable_version_flag(true)
        .disable_help_flag(true)
        .arg(
            Arg::new("from")
                .long("from")
                .value_name("URL")
                .help("Read a running exporter's metrics (http://HOST:PORT/metrics) instead of sampling the node here"),
        )
        .arg(
            Arg::new("from.ca-file")
                .long("from.ca-file")
                .value_name("FILE")
                .help("With an https:// --from: the CA certificate(s) to trust (PEM)"),
        )
        .arg(
            Arg::new("from.cert-file")
                .long("from.cert-file")
                .value_name("FILE")
                .requires("from.key-file")
                .help("With an https:// --from: a client certificate (PEM), for an exporter that requires one"),
        )
        .arg(
            Arg::new("from.key-file")
                .long("from.key-file")
                .value_name("FILE")
                .requires("from.cert-file")
                .help("The client certificate's key (PEM)"),
        )
        .arg(
            Arg::new("from.user")
                .long("from.user")
                .value_name("USER")
                .requires("from.password-file")
                .help("Basic-auth user for --from"),
        )
        .arg(
            Arg::new("from.password-file")
                .long("from.password-file")
                .value_name("FILE")
                .requires("from.user")
                .help("File holding the basic-auth password for --from"),
        )
        .arg(
            Arg::new("from.timeout")
                .long("from.timeout")
                .value_name("DURATION")
                .default_value("30s")
                .value_parser(|s: &str| one_second_to_ten_minutes(s, "30s"))
                .help("The most one read of --from may take, from connecting to the last byte (the answer must start within 10 s of it)"),
        )
        .arg(
            Arg::new("duration")
                .long("duration")
                .value_name("DURATION")
                .default_value("5s")
                .value_parser(|s: &str| one_second_to_ten_minutes(s, "5s"))
                .help("How long to watch: counters are compared across it, peaks taken over it"),
        )
        .arg(
            Arg::new("format")
                .long("format")
                .value_name("FORMAT")
                .default_value("text")
                .value_parser(["text", "json"])
                .help("text (a table for a terminal) or json (for tools)"),
        )
        .args(node_paths())
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .action(ArgAction::Help)
                .help("Print help"),
        )
}

/// A duration flag's value, from 1 s to 10 min; the error shows `example`.
fn one_second_to_ten_minutes(s: &str, example: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
        .ok()
        .filter(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(600))
        .ok_or_else(|| format!("expected a duration from 1s to 10m, such as {example}"))
}

/// `--path.procfs` and `--path.pod-logs`, as the subcommands that look at the node
/// take them (the exporter's own flags validate them further).
pub fn node_paths() -> [Arg; 2] {
    [
        Arg::new("path.procfs")
            .long("path.procfs")
            .value_name("DIR")
            .default_value("/proc")
            .help("procfs mount point (namespaces, processes and pods are found through it)"),
        Arg::new("path.pod-logs")
            .long("path.pod-logs")
            .value_name("DIR")
            .default_value("/var/log/pods")
            .help("The kubelet's pod log directory, which names the pods"),
    ]
}

impl Args {
    /// Parses the arguments after `doctor`.
    ///
    /// # Errors
    /// clap's error (usage or `--help`).
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, clap::Error> {
        let m = command().try_get_matches_from(std::iter::once(OsString::from("doctor")).chain(args))?;
        let s = |k: &str| m.get_one::<String>(k).cloned().unwrap_or_default();
        let path = |k: &str| m.get_one::<String>(k).map(PathBuf::from);
        Ok(Self {
            from: m.get_one::<String>("from").cloned(),
            from_ca_file: path("from.ca-file"),
            from_cert_file: path("from.cert-file"),
            from_key_file: path("from.key-file"),
            from_user: m.get_one::<String>("from.user").cloned(),
            from_password_file: path("from.password-file"),
            from_timeout: m
                .get_one::<Duration>("from.timeout")
                .copied()
                .unwrap_or(Duration::from_secs(30)),
            duration: m
                .get_one::<Duration>("duration")
                .copied()
                .unwrap_or(Duration::from_secs(5)),
            format: if s("format") == "json" {
                Format::Json
            } else {
                Format::Text
            },
            procfs: PathBuf::from(s("path.procfs")),
            pod_logs: PathBuf::from(s("path.pod-logs")),
        })
    }
}

pub use client::Client;

/// Samples the node here for the duration, as the exporter would (every namespace),
/// and returns the first and last expositions and the seconds between them.
fn sample_here(args: &Args) -> Result<(String, String, f64), String> {
    let argv = [
        "netpressure_exporter".to_string(),
        format!("--path.procfs={}", args.procfs.display()),
        format!("--path.pod-logs={}", args.pod_logs.display()),
        format!("--sample.peak-window={}s", args.duration.as_secs() + 5),
        "--netns.interval=1s".into(),
        "--scan.interval=1s".into(),
        "--no-collector.process".into(),
    ];
    let mut cfg = match crate::config::Config::from_args(argv) {
        Ok(c) => c,
        Err(crate::config::CliExit::Usage(e) | crate::config::CliExit::Print(e)) => return Err(e),
    };
    // Every namespace's scans in every round: a few seconds of watching.
    cfg.netns_scan_interval = Duration::from_secs(1);
    let (sampler, mut rx) = crate::sampler::Sampler::from_config(&cfg);
    let (stop_tx, stop_rx) = crate::sampler::stop_pair();
    let handle = std::thread::Builder::new()
        .name("sampler".into())
        .spawn(move || sampler.run(stop_rx))
        .map_err(|e| e.to_string())?;
    let latest = |rx: &mut crate::sampler::Published| -> Option<String> {
        let snap = rx.borrow_and_update().clone()?;
        let mut text = String::new();
        snap.encode(&mut text);
        Some(text)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while rx.borrow().is_none() {
        if Instant::now() > deadline {
            return Err("the sampler took no sample within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let discovery add the other namespaces and sample them once.
    std::thread::sleep(Duration::from_millis(2500));
    let first = latest(&mut rx).unwrap_or_default();
    let t = Instant::now();
    std::thread::sleep(args.duration);
    let last = latest(&mut rx).unwrap_or_default();
    let seconds = t.elapsed().as_secs_f64();
    drop(stop_tx);
    let _ = handle.join();
    Ok((first, last, seconds))
}

/// `conntrack.maxPerCore` and `conntrack.min` of a kube-proxy `--config` file
/// (KubeProxyConfiguration). Any local user can start a process that looks like
/// kube-proxy: the file is hostile input (no aliases, [`crate::yaml`]; fuzzed as
/// `kube_proxy_config`).
pub fn kube_proxy_conntrack(text: &str) -> (Option<u64>, Option<u64>) {
    let Ok(docs) = crate::yaml::load(text) else {
        return (None, None);
    };
    let Some(ct) = docs.first().map(|d| &d["conntrack"]) else {
        return (None, None);
    };
    let count = |v: &yaml_rust2::Yaml| v.as_i64().and_then(|v| u64::try_from(v).ok());
    (count(&ct["maxPerCore"]), count(&ct["min"]))
}

/// kube-proxy on this node, if it runs here: its conntrack flags (command line, or
/// the `conntrack:` section of its `--config` file), else its defaults.
pub fn find_kube_proxy(procfs: &std::path::Path) -> Option<KubeProxy> {
    let dir = std::fs::read_dir(procfs).ok()?;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // Any local user can run a process called kube-proxy: its files are read with
        // the procfs layer's bound, never blocking (a FIFO) or without end (/dev/zero).
        let comm = crate::procfs::read(&e.path().join("comm")).unwrap_or_default();
        if comm.trim_ascii() != b"kube-proxy" {
            continue;
        }
        let cmdline = crate::procfs::read(&e.path().join("cmdline")).unwrap_or_default();
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let flag = |name: &str| -> Option<String> {
            argv.iter().enumerate().find_map(|(i, a)| {
                a.strip_prefix(&format!("--{name}="))
                    .map(str::to_string)
                    .or_else(|| (a == &format!("--{name}")).then(|| argv.get(i + 1).cloned()).flatten())
            })
        };
        let mut per_core = flag("conntrack-max-per-core").and_then(|v| v.parse().ok());
        let mut min = flag("conntrack-min").and_then(|v| v.parse().ok());
        if let Some(config) = flag("config") {
            // kube-proxy's file is YAML; conntrack.maxPerCore and conntrack.min.
            let path = procfs
                .join(pid.to_string())
                .join("root")
                .join(config.trim_start_matches('/'));
            let text = crate::procfs::read(&path).ok().and_then(|b| String::from_utf8(b).ok());
            if let Some(text) = text {
                let (file_per_core, file_min) = kube_proxy_conntrack(&text);
                per_core = per_core.or(file_per_core);
                min = min.or(file_min);
            }
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        return Some(KubeProxy {
            pid,
            from_flags: per_core.is_some() || min.is_some(),
            max_per_core: per_core.unwrap_or(32768),
            min: min.unwrap_or(131_072),
            cpus,
        });
    }
    None
}

/// The pod of each process the exporter served (their cgroup and the pod log
/// directory), by PID.
fn process_pods(last: &expo::Exposition, args: &Args) -> BTreeMap<String, (String, String)> {
    let index = crate::pods::index(&args.pod_logs);
    last.family("netpressure_process_open_fds")
        .filter_map(|s| {
            let pid = s.label("pid");
            let pod = index.get(&crate::pods::uid_of_process(&args.procfs, pid.parse().ok()?)?)?;
            Some((pid.to_string(), (pod.namespace.clone(), pod.name.clone())))
        })
        .collect()
}

/// Gathers the evidence.
///
/// # Errors
/// `--from` cannot be read, or the node cannot be sampled.
pub fn gather(args: &Args) -> Result<Evidence, String> {
    let (first, last, seconds) = match &args.from {
        Some(url) => {
            let client = Client::new(args)?;
            let first = client.get(url)?;
            let t = Instant::now();
            std::thread::sleep(args.duration);
            let last = client.get(url)?;
            (first, last, t.elapsed().as_secs_f64())
        }
        None => sample_here(args)?,
    };
    let (first, last) = (expo::parse(&first), expo::parse(&last));
    if last.family("netpressure_build_info").next().is_none() {
        return Err("the metrics are not a netpressure_exporter's (no netpressure_build_info)".into());
    }
    let local = args.from.is_none();
    let process_pods = if local {
        process_pods(&last, args)
    } else {
        BTreeMap::new()
    };
    Ok(Evidence {
        first,
        last,
        seconds,
        kube_proxy: if local { find_kube_proxy(&args.procfs) } else { None },
        local,
        process_pods,
    })
}

fn place(f: &Finding) -> String {
    match (&f.netns, &f.pod) {
        (Some(n), Some((ns, p))) => format!("pod {ns}/{p} (netns {n})"),
        (Some(n), None) => format!("netns {n}"),
        _ => "node".into(),
    }
}

/// The findings for a terminal, grouped by severity; colour only when `colour`.
pub fn render_text(findings: &[Finding], source: &str, colour: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "netpressure doctor: {source}\n");
    for sev in [Severity::Critical, Severity::Warning, Severity::Info] {
        let group: Vec<&Finding> = findings.iter().filter(|f| f.severity == sev).collect();
        if group.is_empty() {
            continue;
        }
        let (on, off) = match (colour, sev) {
            (true, Severity::Critical) => ("\x1b[1;31m", "\x1b[0m"),
            (true, Severity::Warning) => ("\x1b[1;33m", "\x1b[0m"),
            (true, _) => ("\x1b[1;36m", "\x1b[0m"),
            _ => ("", ""),
        };
        let _ = writeln!(out, "{on}{}{off} ({})", sev.name().to_uppercase(), group.len());
        let width = group.iter().map(|f| f.check.len()).max().unwrap_or(0);
        for f in group {
            let what = if f.subject.is_empty() {
                place(f)
            } else {
                format!("{}: {}", place(f), f.subject)
            };
            let _ = writeln!(out, "  {:<width$}  {what}", f.check);
            let indent = " ".repeat(width + 14);
            let _ = writeln!(out, "  {:<width$}  evidence: {}", "", wrap(&f.evidence, 100, &indent));
            if !f.advice.is_empty() {
                let _ = writeln!(out, "  {:<width$}  advice:   {}", "", wrap(&f.advice, 100, &indent));
            }
        }
        out.push('\n');
    }
    let ok: Vec<&str> = findings
        .iter()
        .filter(|f| f.severity == Severity::Ok)
        .map(|f| f.check)
        .collect();
    if !ok.is_empty() {
        let (on, off) = if colour { ("\x1b[1;32m", "\x1b[0m") } else { ("", "") };
        let _ = writeln!(out, "{on}OK{off} ({}): {}", ok.len(), ok.join(", "));
    }
    out
}

/// `text` broken at spaces into lines of about `cols` characters, continued with
/// `indent`.
fn wrap(text: &str, cols: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split(' ') {
        if line > 0 && line + 1 + word.len() > cols.saturating_sub(indent.len()) {
            out.push('\n');
            out.push_str(indent);
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    crate::logging::json_string(&mut out, s);
    out
}

/// The findings as JSON (docs/doctor.schema.json).
pub fn render_json(findings: &[Finding], ev: &Evidence, source: &str) -> String {
    let opt = |v: Option<&str>| v.map_or("null".to_string(), json_str);
    let items: Vec<String> = findings
        .iter()
        .map(|f| {
            format!(
                "{{\"check\":{},\"severity\":{},\"netns\":{},\"namespace\":{},\"pod\":{},\"subject\":{},\"evidence\":{},\"advice\":{}}}",
                json_str(f.check),
                json_str(f.severity.name()),
                opt(f.netns.as_deref()),
                opt(f.pod.as_ref().map(|p| p.0.as_str())),
                opt(f.pod.as_ref().map(|p| p.1.as_str())),
                json_str(&f.subject),
                json_str(&f.evidence),
                json_str(&f.advice)
            )
        })
        .collect();
    format!(
        "{{\"version\":1,\"source\":{},\"seconds\":{:.1},\"namespaces\":{},\"critical\":{},\"findings\":[{}]}}\n",
        json_str(source),
        ev.seconds,
        ev.namespaces().len(),
        findings.iter().any(|f| f.severity == Severity::Critical),
        items.join(",")
    )
}

/// This process's effective UID, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Runs the doctor; returns what to print and whether anything is critical.
///
/// # Errors
/// The evidence cannot be gathered.
pub fn run(args: &Args, colour: bool) -> Result<(String, bool), String> {
    let ev = gather(args)?;
    let findings = checks::run(&ev);
    let source = match &args.from {
        Some(url) => format!("read {url} twice, {:.0} s apart", ev.seconds),
        None => format!(
            "sampled this node for {:.0} s ({}){}",
            ev.seconds,
            checks::namespaces_phrase(ev.namespaces().len()),
            if effective_uid() == Some(0) {
                ""
            } else {
                "; not root: other namespaces and processes may be missing (run as root, or use --from)"
            }
        ),
    };
    let critical = findings.iter().any(|f| f.severity == Severity::Critical);
    let text = match args.format {
        Format::Text => render_text(&findings, &source, colour),
        Format::Json => render_json(&findings, &ev, &source),
    };
    Ok((text, critical))
}

#[cfg(test)]
mod tests {
    use super::kube_proxy_conntrack;

    fn seed(name: &str) -> String {
        let path = format!("{}/fuzz/corpus/kube_proxy_config/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn kube_proxy_config_files_give_their_conntrack_settings() {
        // kubeadm's defaults leave both null: kube-proxy's own defaults apply.
        assert_eq!(kube_proxy_conntrack(&seed("kubeadm-defaults.yaml")), (None, None));
        assert_eq!(kube_proxy_conntrack(&seed("tuned.yaml")), (Some(65536), Some(262_144)));
        assert_eq!(kube_proxy_conntrack("conntrack:\n  maxPerCore: -1\n"), (None, None));
    }

    #[test]
    fn a_kube_proxy_config_with_aliases_is_not_expanded() {
        let path = format!(
            "{}/fuzz/regressions/kube_proxy_config/alias-bomb.yml",
            env!("CARGO_MANIFEST_DIR")
        );
        let bomb = std::fs::read_to_string(path).unwrap();
        assert_eq!(kube_proxy_conntrack(&bomb), (None, None));
    }
}
