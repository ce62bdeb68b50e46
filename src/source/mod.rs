//! Sources: one file per kernel interface, and the one table that registers them. The
//! `--collector.NAME` flags, the self-metrics and the docs all come from [`SOURCES`].

pub mod conntrack;
pub mod filefd;
pub mod listeners;
pub mod netstat;
pub mod process;
pub mod processes;
pub mod remotes;
pub mod sockstat;
pub mod softnet;
pub mod sysctl;

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::metrics;
use crate::netlink::NetlinkError;
use crate::procfs::ProcError;
use crate::snapshot::Snapshot;

/// Why a sample failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    Other(String),
}

impl SourceError {
    /// The kernel does not have what this source reads: report down, log at debug, count
    /// no error.
    pub fn is_absent(&self) -> bool {
        match self {
            Self::Proc(e) => e.is_not_found(),
            Self::Netlink(e) => e.is_unsupported(),
            Self::Other(_) => false,
        }
    }
}

/// One kernel source, sampled on the sampler thread.
pub trait Source: Send {
    /// The `source` label value and the NAME in `--collector.NAME`.
    fn name(&self) -> &'static str;

    /// Takes one sample and pushes its series into `out`. Must not block for long and
    /// must not panic on any kernel input.
    ///
    /// # Errors
    /// The source is down for this sample; the sampler counts and logs it.
    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError>;

    /// Makes the source log its own state changes at debug only: it is one of many
    /// instances in other namespaces, which the sampler reports in aggregate.
    fn set_quiet(&mut self) {}

    /// Reports the status of paths inside the source (e.g. ctnetlink beside its procfs
    /// fallback) as extra `source` label values.
    fn visit_status(&self, _f: &mut dyn FnMut(&'static str, &SourceStatus)) {}
}

/// How often the sampler runs a source. Between runs it serves the source's last
/// output, so a scrape always sees every source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Every `--sample.interval`: sources with pressure gauges and their peaks.
    Sample,
    /// Every second (or every sample, if that is slower): sources that serve only
    /// counters and slow-moving values, whose rate a sub-second sample would not change.
    Second,
    /// Every `--scan.interval`: dumps that walk the established hash, and tuning values.
    Scan,
}

/// A source in the registry.
#[derive(Debug)]
pub struct SourceInfo {
    pub name: &'static str,
    pub help: &'static str,
    pub default_enabled: bool,
    pub cadence: Cadence,
    /// The source reads one network namespace: it runs in every namespace the sampler
    /// tracks and its series carry the `netns` (and pod) labels. Other sources are
    /// node-wide and run once.
    pub namespaced: bool,
    pub build: fn(&Config) -> Box<dyn Source>,
}

pub static SOURCES: &[SourceInfo] = &[
    SourceInfo {
        name: "conntrack",
        help: "conntrack table fill, limit, hash size, TCP timeouts and per-CPU counters (ctnetlink, procfs fallback)",
        default_enabled: true,
        cadence: Cadence::Sample,
        namespaced: true,
        build: |cfg| Box::new(conntrack::Conntrack::new(cfg)),
    },
    SourceInfo {
        name: "netstat",
        help: "TCP listen-queue, SYN-queue, syncookie, TIME_WAIT and connection counters (/proc/net/netstat, snmp)",
        default_enabled: true,
        cadence: Cadence::Second,
        namespaced: true,
        build: |cfg| Box::new(netstat::Netstat::new(cfg)),
    },
    SourceInfo {
        name: "sockstat",
        help: "TCP sockets in use, orphaned and in TIME_WAIT, against tcp_max_tw_buckets (/proc/net/sockstat)",
        default_enabled: true,
        cadence: Cadence::Sample,
        namespaced: true,
        build: |cfg| Box::new(sockstat::Sockstat::new(cfg)),
    },
    SourceInfo {
        name: "listeners",
        help: "accept queue and limit per listener every sample, SYN_RECV per listener every scan (sock_diag)",
        default_enabled: true,
        cadence: Cadence::Sample,
        namespaced: true,
        build: |cfg| Box::new(listeners::Listeners::new(cfg)),
    },
    SourceInfo {
        name: "remotes",
        help: "sockets holding an ephemeral local port per remote endpoint, by state, every scan (sock_diag)",
        default_enabled: true,
        cadence: Cadence::Scan,
        namespaced: true,
        build: |cfg| Box::new(remotes::Remotes::new(cfg)),
    },
    SourceInfo {
        name: "softnet",
        help: "input backlog drops and squeezes (/proc/net/softnet_stat) against netdev_max_backlog",
        default_enabled: true,
        cadence: Cadence::Second,
        namespaced: false,
        build: |cfg| Box::new(softnet::Softnet::new(cfg)),
    },
    SourceInfo {
        name: "sysctl",
        help: "the per-namespace tuning values that bound these pressures (somaxconn, tcp_max_syn_backlog, ...), every scan",
        default_enabled: true,
        cadence: Cadence::Scan,
        namespaced: true,
        build: |cfg| Box::new(sysctl::Sysctl::new(cfg)),
    },
    SourceInfo {
        name: "filefd",
        help: "system-wide file handles against fs.file-max, and fs.nr_open (/proc/sys/fs)",
        default_enabled: true,
        cadence: Cadence::Sample,
        namespaced: false,
        build: |cfg| Box::new(filefd::FileFd::new(cfg)),
    },
    SourceInfo {
        name: "processes",
        help: "the processes nearest their RLIMIT_NOFILE, every scan (/proc/PID/fd, /proc/PID/limits)",
        default_enabled: true,
        cadence: Cadence::Scan,
        namespaced: false,
        build: |cfg| Box::new(processes::Processes::new(cfg)),
    },
    SourceInfo {
        name: "process",
        help: "the exporter's own process_* metrics",
        default_enabled: true,
        cadence: Cadence::Second,
        namespaced: false,
        build: |_| Box::new(process::Process::new()),
    },
];

/// The health of one source (or one path inside a source), as self-metrics.
#[derive(Debug, Default, Clone)]
pub struct SourceStatus {
    /// Log at debug only (a source in one of many pod namespaces: the sampler reports
    /// those in aggregate).
    pub quiet: bool,
    pub up: bool,
    pub errors: u64,
    pub samples: u64,
    pub duration: Duration,
    last_error: Option<String>,
    /// The last failure was logged at warn (so its recovery is logged at info).
    warned: bool,
    repeats: crate::logging::Repeats,
}

impl SourceStatus {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            ..Self::default()
        }
    }

    /// Records one sample's outcome. Logs when the source goes down or its error changes,
    /// and when it recovers: never once a tick.
    pub fn record(&mut self, name: &str, result: Result<(), &SourceError>, took: Duration) {
        self.samples += 1;
        self.duration = took;
        match result {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    if std::mem::take(&mut self.warned) {
                        log::info!("source {name} recovered");
                    } else {
                        log::debug!("source {name} recovered");
                    }
                }
                self.up = true;
            }
            Err(e) => {
                self.up = false;
                let absent = e.is_absent();
                if !absent {
                    self.errors += 1;
                }
                let msg = e.to_string();
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    let allowed = if absent || self.quiet {
                        None
                    } else {
                        self.repeats.allow(&msg, Instant::now())
                    };
                    match allowed {
                        Some(0) => log::warn!("source {name} is down: {msg}"),
                        Some(n) => log::warn!("source {name} is down: {msg} ({n} more times since the last warning)"),
                        None if absent => log::debug!("source {name} is down: not available on this kernel: {msg}"),
                        None => log::debug!("source {name} is down: {msg}"),
                    }
                    self.warned = allowed.is_some();
                    self.last_error = Some(msg);
                }
            }
        }
    }

    pub fn emit(&self, name: &str, out: &mut Snapshot) {
        let l = [("source", name)];
        out.push(&metrics::SOURCE_UP, &l, if self.up { 1.0 } else { 0.0 });
        out.push(&metrics::SOURCE_ERRORS, &l, self.errors as f64);
        out.push(&metrics::SOURCE_DURATION, &l, self.duration.as_secs_f64());
        out.push(&metrics::SAMPLES, &l, self.samples as f64);
    }
}

/// Decimal label values for small indexes (CPU numbers), formatted once.
#[derive(Debug, Default)]
pub struct IndexLabels(Vec<String>);

impl IndexLabels {
    pub fn get(&mut self, i: usize) -> &str {
        while self.0.len() <= i {
            self.0.push(self.0.len().to_string());
        }
        &self.0[i]
    }
}

/// A slower clock inside a source (`--scan.interval`): due on the first call, then once
/// per interval.
#[derive(Debug)]
pub struct Every {
    interval: Duration,
    next: Option<Instant>,
}

impl Every {
    pub fn new(interval: Duration) -> Self {
        Self { interval, next: None }
    }

    pub fn due(&mut self, now: Instant) -> bool {
        if self.next.is_some_and(|t| now < t) {
            return false;
        }
        self.next = Some(now + self.interval);
        true
    }

    /// Makes the next call due (after a failed scan, so it is retried next sample).
    pub fn reset(&mut self) {
        self.next = None;
    }
}
