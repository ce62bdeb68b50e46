//! The command line: every flag with its default and help, as `--help` shows them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};

use super::values::*;
use super::Config;
use crate::collectors::COLLECTORS;

pub(super) fn command() -> Command {
    let d = Config::default();
    let mut cmd = Command::new("netpressure_exporter")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Prometheus exporter for conntrack, socket and file-descriptor pressure, sampled sub-second")
        .after_help(
            "Subcommands (each with --help):\n  \
             netpressure_exporter doctor         check this node's tuning against what it lives through\n  \
             netpressure_exporter conntrack-top  who fills a conntrack table, once, in the terminal",
        )
        .disable_version_flag(true)
        .arg(Arg::new("version").long("version").action(ArgAction::Version).help("Print the version"))
        .arg(
            Arg::new("web.listen-address")
                .long("web.listen-address")
                .value_name("[HOST]:PORT")
                .action(ArgAction::Append)
                .default_value(d.listen_addresses[0].clone())
                .value_parser(parse_listen_address)
                .help("Address on which to expose metrics and the web interface; repeat it to serve the same endpoint on several (a node IP and loopback)"),
        )
        .arg(
            Arg::new("web.systemd-socket")
                .long("web.systemd-socket")
                .action(ArgAction::SetTrue)
                .help("Serve on the sockets systemd passes (socket activation, LISTEN_FDS) instead of --web.listen-address"),
        )
        .arg(
            Arg::new("web.telemetry-path")
                .long("web.telemetry-path")
                .value_name("PATH")
                .default_value(d.telemetry_path)
                .value_parser(parse_telemetry_path)
                .help("Path under which to expose metrics"),
        )
        .arg(
            Arg::new("web.max-requests")
                .long("web.max-requests")
                .value_name("N")
                .default_value("40")
                .value_parser(parse_count)
                .help("Most /metrics requests served at once; more get 503 (as node_exporter's flag)"),
        )
        .arg(
            Arg::new("web.max-connections")
                .long("web.max-connections")
                .value_name("N")
                .default_value("64")
                .value_parser(parse_count)
                .help("Most HTTP connections held; at the cap a new one replaces the one quiet for longest"),
        )
        .arg(
            Arg::new("web.config.file")
                .long("web.config.file")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "Web configuration file (TLS, basic auth, headers, rate limit) in the Prometheus \
                     exporter-toolkit format; re-read when it changes and on SIGHUP",
                ),
        )
        .arg(
            Arg::new("path.procfs")
                .long("path.procfs")
                .value_name("DIR")
                .default_value("/proc")
                .value_parser(parse_dir)
                .help("procfs mountpoint (e.g. /host/proc in a container)"),
        )
        .arg(
            Arg::new("path.sysfs")
                .long("path.sysfs")
                .value_name("DIR")
                .default_value("/sys")
                .value_parser(parse_dir)
                .help("sysfs mountpoint"),
        )
        .arg(
            Arg::new("sample.interval")
                .long("sample.interval")
                .value_name("DURATION")
                .default_value("250ms")
                .value_parser(|s: &str| {
                    bounded(s, Duration::from_millis(10), secs(60), "expected a duration from 10ms to 1m, such as 250ms")
                })
                .help("How often every enabled source is sampled (10ms to 1m)"),
        )
        .arg(
            Arg::new("sample.counter-interval")
                .long("sample.counter-interval")
                .value_name("DURATION")
                .default_value("5s")
                .value_parser(|s: &str| bounded(s, secs(1), secs(60), "expected a duration from 1s to 1m, such as 5s"))
                .help("How often the counters (netstat, softnet, the exporter's own process, conntrack's per-CPU counters) are read; a rate over minutes does not change with it, gauges and peaks follow --sample.interval (1s to 1m)"),
        )
        .arg(
            Arg::new("sample.peak-window")
                .long("sample.peak-window")
                .value_name("DURATION")
                .default_value("60s")
                .value_parser(|s: &str| bounded(s, secs(1), secs(3600), "expected a duration from 1s to 1h, such as 60s"))
                .help("Sliding window over which _peak gauges keep their maximum (1s to 1h)"),
        )
        .arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Disable every collector not enabled explicitly with --collector.NAME"),
        )
        .arg(
            Arg::new("collector.conntrack.per-cpu")
                .long("collector.conntrack.per-cpu")
                .action(ArgAction::SetTrue)
                .help("Serve conntrack counters per CPU (a cpu label) instead of summed"),
        )
        .arg(
            Arg::new("collector.conntrack.breakdown-threshold")
                .long("collector.conntrack.breakdown-threshold")
                .value_name("FRACTION")
                .default_value("0.75")
                .value_parser(parse_fraction)
                .help("Break a conntrack table down (by state, top sources and destinations) when its entries reach this fraction of the limit; 0 always, 1 never"),
        )
        .arg(
            Arg::new("collector.conntrack.breakdown-interval")
                .long("collector.conntrack.breakdown-interval")
                .value_name("DURATION")
                .default_value("30s")
                .value_parser(|s: &str| bounded(s, secs(1), secs(3600), "expected a duration from 1s to 1h, such as 30s"))
                .help("Most often a table under pressure is dumped for its breakdown (1s to 1h)"),
        )
        .arg(
            Arg::new("collector.conntrack.breakdown-timeout")
                .long("collector.conntrack.breakdown-timeout")
                .value_name("DURATION")
                .default_value("5s")
                .value_parser(|s: &str| bounded(s, Duration::from_millis(1), secs(60), "expected a duration from 1ms to 1m, such as 5s"))
                .help("Longest a breakdown dump may run; a longer one is cut and served as incomplete"),
        )
        .arg(
            Arg::new("collector.conntrack.breakdown-top")
                .long("collector.conntrack.breakdown-top")
                .value_name("N")
                .default_value("10")
                .value_parser(parse_count)
                .help("Sources and destinations served by a breakdown: the largest; the rest add up in \"other\""),
        )
        .arg(
            Arg::new("scan.interval")
                .long("scan.interval")
                .value_name("DURATION")
                .default_value("5s")
                .value_parser(|s: &str| bounded(s, secs(1), secs(600), "expected a duration from 1s to 10m, such as 5s"))
                .help("How often the dumps that walk the established hash run: SYN_RECV per listener, sockets per remote (1s to 10m)"),
        )
        .arg(
            Arg::new("collector.listeners.max")
                .long("collector.listeners.max")
                .value_name("N")
                .default_value("100")
                .value_parser(parse_count)
                .help("Most listeners served per sample; the fullest are kept, the rest counted in netpressure_tcp_listeners_omitted"),
        )
        .arg(
            Arg::new("collector.listeners.ports")
                .long("collector.listeners.ports")
                .value_name("PORTS")
                .value_parser(parse_ports)
                .help("Only listeners on these local ports, e.g. 80,443,8000-8100 (default: all)"),
        )
        .arg(
            Arg::new("collector.remotes.top")
                .long("collector.remotes.top")
                .value_name("N")
                .default_value("20")
                .value_parser(parse_count)
                .help("Remote endpoints served: those holding the most local ports"),
        )
        .arg(
            Arg::new("collector.processes.top")
                .long("collector.processes.top")
                .value_name("N")
                .default_value("10")
                .value_parser(parse_count)
                .help("Processes served: those with the most open descriptors for their limit"),
        )
        .arg(
            Arg::new("collector.softnet.per-cpu")
                .long("collector.softnet.per-cpu")
                .action(ArgAction::SetTrue)
                .help("Serve softnet counters per CPU (a cpu label) instead of summed"),
        )
        .arg(
            Arg::new("collector.netns")
                .long("collector.netns")
                .action(ArgAction::SetTrue)
                .overrides_with("no-collector.netns")
                .help("Sample every network namespace on the node, not only the exporter's own (default: enabled; needs CAP_SYS_ADMIN and CAP_SYS_PTRACE)"),
        )
        .arg(
            Arg::new("no-collector.netns")
                .long("no-collector.netns")
                .action(ArgAction::SetTrue)
                .overrides_with("collector.netns")
                .help("Sample only the exporter's own network namespace"),
        )
        .arg(
            Arg::new("netns.node-pass")
                .long("netns.node-pass")
                .action(ArgAction::SetTrue)
                .overrides_with("no-netns.node-pass")
                .help("Read every namespace's conntrack count and listener queues in one BPF pass, once compared with the kernel's own answers (default: enabled; needs CAP_BPF and CAP_PERFMON, kernel 5.17+)"),
        )
        .arg(
            Arg::new("no-netns.node-pass")
                .long("no-netns.node-pass")
                .action(ArgAction::SetTrue)
                .overrides_with("netns.node-pass")
                .help("Read each namespace on its own (ctnetlink and sock_diag in each)"),
        )
        .arg(
            Arg::new("netns.sample-interval")
                .long("netns.sample-interval")
                .value_name("DURATION")
                .default_value("1s")
                .value_parser(|s: &str| {
                    bounded(s, Duration::from_millis(100), secs(60), "expected a duration from 100ms to 1m, such as 1s")
                })
                .help("How often the pressure gauges of the other namespaces are sampled, each with its peak (100ms to 1m; never more often than --sample.interval)"),
        )
        .arg(
            Arg::new("netns.interval")
                .long("netns.interval")
                .value_name("DURATION")
                .default_value("10s")
                .value_parser(|s: &str| bounded(s, secs(1), secs(600), "expected a duration from 1s to 10m, such as 10s"))
                .help("How often namespaces are discovered and the other namespaces' counters read (1s to 10m)"),
        )
        .arg(
            Arg::new("netns.scan-interval")
                .long("netns.scan-interval")
                .value_name("DURATION")
                .default_value("5m")
                .value_parser(|s: &str| bounded(s, secs(10), secs(3600), "expected a duration from 10s to 1h, such as 5m"))
                .help("How often each other namespace's hash-walking dumps run, spread over the interval (10s to 1h)"),
        )
        .arg(
            Arg::new("netns.max")
                .long("netns.max")
                .value_name("N")
                .default_value("512")
                .value_parser(parse_count)
                .help("Most namespaces sampled besides the exporter's own; the rest are counted in netpressure_netns_omitted"),
        )
        .arg(
            Arg::new("netns.families")
                .long("netns.families")
                .value_name("LIST")
                .default_value("default")
                .value_parser(parse_families)
                .help("Metric families served for namespaces other than the exporter's own: default (23 series for an idle pod, see docs/metrics.md), all, or a comma-separated list of family names and 'default' (each family costs a series per pod)"),
        )
        .arg(
            Arg::new("path.pod-logs")
                .long("path.pod-logs")
                .value_name("DIR")
                .default_value("/var/log/pods")
                .value_parser(parse_dir)
                .help("The kubelet's pod log directory, whose NAMESPACE_NAME_UID entries name pods"),
        )
        .arg(
            Arg::new("log.level")
                .long("log.level")
                .value_name("LEVEL")
                .default_value("info")
                .value_parser(parse_level)
                .help("Only log messages with the given severity or above: debug, info, warn, error"),
        )
        .arg(
            Arg::new("log.format")
                .long("log.format")
                .value_name("FORMAT")
                .default_value("logfmt")
                .value_parser(parse_format)
                .help("Output format of log messages: logfmt or json"),
        );
    for s in COLLECTORS {
        let on = format!("collector.{}", s.name);
        let off = format!("no-collector.{}", s.name);
        let default = if s.default_enabled { "enabled" } else { "disabled" };
        cmd = cmd
            .arg(
                Arg::new(on.clone())
                    .long(on.clone())
                    .action(ArgAction::SetTrue)
                    .overrides_with(off.clone())
                    .help(format!(
                        "Enable the {} collector: {} (default: {default})",
                        s.name, s.help
                    )),
            )
            .arg(
                Arg::new(off.clone())
                    .long(off)
                    .action(ArgAction::SetTrue)
                    .overrides_with(on)
                    .help(format!("Disable the {} collector", s.name)),
            );
    }
    cmd
}

pub(super) fn get<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> Option<T> {
    m.get_one::<T>(id).cloned()
}
