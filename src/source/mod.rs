//! Sources: one file per kernel interface, and the one table that registers them. The
//! `--collector.NAME` flags, the self-metrics and the docs all come from [`SOURCES`].

pub mod breakdown;
pub mod conntrack;
pub mod drop_reasons;
pub mod filefd;
pub mod listeners;
pub mod netstat;
pub mod pass;
pub mod process;
pub mod processes;
pub mod remotes;
pub mod settings;
pub mod sockstat;
pub mod softnet;
pub mod sysctl;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::cadence::{Cadence, Scope, SlowCadence};
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
    #[error(transparent)]
    Bpf(#[from] crate::bpf::BpfError),
    /// A file or call the source names failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// What the other lane provides has not come yet (the sysctls, read on the slow
    /// lane's first round).
    #[error("{0} has not been read yet")]
    NotYetRead(&'static str),
    /// The slow lane's read of this namespace's sysctls failed, with its message (kept
    /// as text: it is shared between both lanes' sources and shown, never matched).
    #[error("reading the sysctls: {0}")]
    Settings(String),
    /// The source panicked (counted in `netpressure_source_panics_total`).
    #[error("the source panicked; this is a bug, please report it")]
    Panicked,
    /// The lane could not run it in its namespace (which it could not enter), and why.
    #[error("{0}")]
    NotRun(String),
    /// The kernel lacks what the source needs (a feature of a later version, a
    /// configuration option): down, logged at debug, no error counted.
    #[error("{0}")]
    Absent(String),
}

impl SourceError {
    /// The source must open a handle inside its namespace: the sampler enters it and
    /// runs the source again. Not a failure.
    pub fn needs_entering(&self) -> bool {
        matches!(
            self,
            Self::Proc(ProcError::NotEntered(_)) | Self::Netlink(NetlinkError::NotEntered { .. })
        )
    }

    /// The kernel does not have what this source reads: report down, log at debug, count
    /// no error.
    pub fn is_absent(&self) -> bool {
        match self {
            Self::Proc(e) => e.is_not_found(),
            Self::Netlink(e) => e.is_unsupported(),
            Self::Bpf(_)
            | Self::Io { .. }
            | Self::NotYetRead(_)
            | Self::Settings(_)
            | Self::Panicked
            | Self::NotRun(_) => false,
            Self::Absent(_) => true,
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

    /// Whether the source wants its next run, from the evidence it watches (a slow-lane
    /// source whose work is worth its cost only under pressure).
    fn want(&self) -> Want {
        Want::Cadence
    }
}

/// What a source's evidence says about its next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// On its cadence, as any source.
    Cadence,
    /// Now, whatever the cadence: the evidence turned.
    Now,
    /// Not even on its cadence: the evidence shows nothing its run could find, and its
    /// last output already says so.
    Not,
}

/// Wakes the slow lane's thread before its next due round, when a fast-lane source sees
/// the evidence for a slow-lane source turn (a conntrack table crossing the breakdown's
/// threshold, a namespace's sockets reaching the share of its port range where a remote
/// could matter). The slow lane sleeps until its next due work otherwise: a wake-up is
/// what an idle exporter mostly pays for (about 55 µs each on the benchmark machine).
#[derive(Debug, Default)]
pub struct Wake {
    thread: Mutex<Option<std::thread::Thread>>,
    asked: AtomicBool,
}

impl Wake {
    /// The calling thread is the one to wake.
    pub fn register(&self) {
        *crate::sync::lock(&self.thread) = Some(std::thread::current());
    }

    pub fn ask(&self) {
        self.asked.store(true, Ordering::SeqCst);
        if let Some(t) = crate::sync::lock(&self.thread).as_ref() {
            t.unpark();
        }
    }

    /// Sleeps until `deadline`, an ask, or `stop`; whether asked (the ask is taken).
    pub fn sleep_until(&self, deadline: Instant, stop: &AtomicBool) -> bool {
        loop {
            if self.asked.swap(false, Ordering::SeqCst) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::park_timeout(deadline - now);
        }
    }
}

/// The share of a namespace's local port range its TCP sockets (in use plus TIME_WAIT)
/// must reach before the remotes scan walks the established hash: with fewer, no remote
/// can hold more than this share of the range, far below the 80 % alert. The walk costs
/// the same whatever the namespace holds (the hash is the node's).
pub const REMOTES_EVIDENCE_SHARE: u64 = 8;

/// Builds a source for one namespace, with what it shares with that namespace's other
/// sources.
pub type Build = fn(&Config, &Arc<NsContext>) -> Box<dyn Source>;

/// A source in the registry: how the collector of the same name
/// ([`crate::collectors::COLLECTORS`]) is built. A source has a fast part, run on the
/// sample clock, and/or a slow part, run every scan on the slow lane (hash-walking
/// dumps, process scans, sysctls), so that slow work never delays a sample.
#[derive(Debug)]
pub struct SourceInfo {
    pub name: &'static str,
    /// The source reads one network namespace: it runs in every namespace the sampler
    /// tracks and its series carry the `netns` (and pod) labels. Other sources are
    /// node-wide and run once.
    pub namespaced: bool,
    pub fast: Option<(Cadence, Build)>,
    pub slow: Option<(SlowCadence, Build)>,
}

/// What every namespace's context shares: one per sampler.
#[derive(Default)]
pub struct Node {
    /// Which namespace on the node owns which address (the breakdown's names).
    pub owners: Arc<breakdown::Owners>,
    /// The slow lane's thread, woken when evidence turns.
    pub wake: Arc<Wake>,
    /// The node's drop counter.
    pub drops: Arc<drop_reasons::NodeDrops>,
    /// The node pass: the other namespaces' conntrack counts and listeners in one run.
    pub pass: Arc<pass::NodePass>,
}

/// What the slow lane leaves in a namespace's context for the fast lane's sources: the
/// sysctls (read at the scan cadence) and the SYN_RECV scan's counts. The slow lane
/// writes, the fast lane reads.
#[derive(Default)]
pub struct FromSlow {
    pub settings: Mutex<settings::Settings>,
    /// Why the last sysctl read failed, if it did.
    pub settings_error: Mutex<Option<String>>,
    pub syn: Mutex<listeners::SynShared>,
}

/// What the fast lane's sources leave for the slow lane's scans to decide by: the fast
/// lane writes, the slow lane reads (and is woken when it turns).
pub struct Evidence {
    /// The table's entries and limit, as the conntrack source last read them: the
    /// breakdown's trigger.
    conntrack_fill: Mutex<Option<(u64, u64)>>,
    /// TCP sockets in use plus TIME_WAIT, as sockstat last read them (`u64::MAX` before
    /// the first read, or without the sockstat source): the remotes scan's evidence.
    tcp_sockets: AtomicU64,
    /// TCP segments received (snmp `Tcp InSegs`), as netstat last read them (`u64::MAX`
    /// before): the SYN_RECV scan's evidence.
    tcp_in_segs: AtomicU64,
    /// `--collector.conntrack.breakdown-threshold`.
    breakdown_threshold: f64,
}

impl Default for Evidence {
    fn default() -> Self {
        Self {
            conntrack_fill: Mutex::default(),
            tcp_sockets: AtomicU64::new(u64::MAX),
            tcp_in_segs: AtomicU64::new(u64::MAX),
            breakdown_threshold: 1.0,
        }
    }
}

/// What the sources of one namespace share, across both lanes, each part with one
/// writer: the node's shared state, what the slow lane leaves for the fast lane, the
/// evidence the fast lane leaves for the slow lane, and the slow lane's own sock_diag
/// socket.
#[derive(Default)]
pub struct NsContext {
    /// The namespace's identity (nsfs device and inode), where known: the drop counter's
    /// key.
    pub netns: Option<crate::netns::NsKey>,
    /// The exporter's own namespace, or another.
    pub scope: Scope,
    pub node: Arc<Node>,
    pub from_slow: FromSlow,
    pub evidence: Evidence,
    /// The slow lane's scans' socket in this namespace (only they use it).
    pub slow_diag: Mutex<crate::netlink::sock_diag::LazySockDiag>,
}

impl std::fmt::Debug for NsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NsContext")
    }
}

impl NsContext {
    /// A context for the calling thread's namespace with its settings read now (for
    /// benches and tools that run sources without a sampler).
    ///
    /// # Errors
    /// The settings cannot be read.
    pub fn read_here(cfg: &Config) -> Result<Arc<Self>, crate::procfs::ProcError> {
        let ctx = Self {
            evidence: Evidence {
                breakdown_threshold: cfg.breakdown_threshold,
                ..Evidence::default()
            },
            ..Self::default()
        };
        *crate::sync::lock(&ctx.from_slow.settings) = settings::SettingsReader::new(cfg).read()?;
        Ok(Arc::new(ctx))
    }

    /// A context for the namespace `netns`, sharing the `node`'s state.
    pub fn shared(node: &Arc<Node>, cfg: &Config, netns: Option<crate::netns::NsKey>, scope: Scope) -> Self {
        Self {
            scope,
            node: Arc::clone(node),
            evidence: Evidence {
                breakdown_threshold: cfg.breakdown_threshold,
                ..Evidence::default()
            },
            netns,
            ..Self::default()
        }
    }

    /// This namespace's record from the node pass, where the pass serves `field` for it
    /// (another namespace, the field in use), with `nf_conntrack_max`.
    pub fn from_pass(&self, field: pass::Field) -> Option<(crate::bpf::pass::NsRecord, Option<u64>)> {
        if self.scope != Scope::Other {
            return None;
        }
        self.node.pass.namespace(self.netns?.1, field)
    }

    /// Calls `f` with this namespace's listeners from the node pass, where it serves
    /// them (another namespace, the field in use); `false` otherwise.
    pub fn pass_listeners(&self, f: impl FnMut(&crate::bpf::pass::ListenerRecord)) -> bool {
        match self.netns {
            Some((_, ino)) if self.scope == Scope::Other => self.node.pass.listeners(ino, f),
            _ => false,
        }
    }

    pub fn conntrack_fill(&self) -> Option<(u64, u64)> {
        *crate::sync::lock(&self.evidence.conntrack_fill)
    }

    /// Whether `fill` is at or above the breakdown's threshold.
    pub fn breakdown_pressure(&self, fill: Option<(u64, u64)>) -> bool {
        let t = self.evidence.breakdown_threshold;
        if t >= 1.0 {
            return false;
        }
        if t <= 0.0 {
            return true;
        }
        match fill {
            Some((entries, limit)) if limit > 0 => entries as f64 >= t * limit as f64,
            _ => false,
        }
    }

    /// Records the table's fill; wakes the slow lane when it reaches the breakdown's
    /// threshold.
    pub fn set_conntrack_fill(&self, fill: Option<(u64, u64)>) {
        let before = std::mem::replace(&mut *crate::sync::lock(&self.evidence.conntrack_fill), fill);
        if self.breakdown_pressure(fill) && !self.breakdown_pressure(before) {
            self.node.wake.ask();
        }
    }

    /// TCP segments received in the namespace, if netstat has read them.
    pub fn tcp_in_segs(&self) -> Option<u64> {
        Some(self.evidence.tcp_in_segs.load(Ordering::Relaxed)).filter(|n| *n != u64::MAX)
    }

    pub fn set_tcp_in_segs(&self, n: u64) {
        self.evidence.tcp_in_segs.store(n, Ordering::Relaxed);
    }

    /// TCP sockets in use plus TIME_WAIT, if sockstat has read them.
    pub fn tcp_sockets(&self) -> Option<u64> {
        Some(self.evidence.tcp_sockets.load(Ordering::Relaxed)).filter(|n| *n != u64::MAX)
    }

    /// Records sockstat's count; wakes the slow lane when it reaches the remotes scan's
    /// evidence share of the port range.
    pub fn set_tcp_sockets(&self, n: u64) {
        let before = self.evidence.tcp_sockets.swap(n, Ordering::Relaxed);
        // The first count decides the scan's state either way; later, only a rise to
        // the share is urgent (a fall is served at the next round).
        if let Some(min) = self.remotes_evidence() {
            if before == u64::MAX || (n >= min && before < min) {
                self.node.wake.ask();
            }
        }
    }

    /// The fewest TCP sockets that make the remotes scan worth its walk, once the port
    /// range is known.
    pub fn remotes_evidence(&self) -> Option<u64> {
        let range = crate::sync::lock(&self.from_slow.settings).port_range?;
        Some(remotes::range_size(range).div_ceil(REMOTES_EVIDENCE_SHARE))
    }

    /// The last sysctl values read in this namespace.
    pub fn settings(&self) -> settings::Settings {
        crate::sync::lock(&self.from_slow.settings).clone()
    }
}

/// The source of each enabled collector, in the registry's order.
pub fn enabled(names: &[&str]) -> Vec<&'static SourceInfo> {
    SOURCES.iter().filter(|s| names.contains(&s.name)).collect()
}

pub static SOURCES: &[SourceInfo] = &[
    SourceInfo {
        name: "conntrack",
        namespaced: true,
        fast: Some((Cadence::Sample, |cfg, ctx| {
            Box::new(conntrack::Conntrack::new(cfg, ctx))
        })),
        slow: Some((SlowCadence::Evidence, |cfg, ctx| {
            Box::new(breakdown::Breakdown::new(cfg, ctx))
        })),
    },
    SourceInfo {
        name: "netstat",
        namespaced: true,
        fast: Some((Cadence::Counter, |cfg, ctx| Box::new(netstat::Netstat::new(cfg, ctx)))),
        slow: None,
    },
    SourceInfo {
        name: "sockstat",
        namespaced: true,
        fast: Some((Cadence::Sample, |cfg, ctx| Box::new(sockstat::Sockstat::new(cfg, ctx)))),
        slow: None,
    },
    SourceInfo {
        name: "listeners",
        namespaced: true,
        fast: Some((Cadence::Sample, |cfg, ctx| {
            Box::new(listeners::Listeners::new(cfg, ctx))
        })),
        slow: Some((SlowCadence::Scan, |_, ctx| Box::new(listeners::SynScan::new(ctx)))),
    },
    SourceInfo {
        name: "remotes",
        namespaced: true,
        fast: None,
        slow: Some((SlowCadence::Scan, |cfg, ctx| Box::new(remotes::Remotes::new(cfg, ctx)))),
    },
    SourceInfo {
        name: "softnet",
        namespaced: false,
        fast: Some((Cadence::Counter, |cfg, _| Box::new(softnet::Softnet::new(cfg)))),
        slow: None,
    },
    SourceInfo {
        name: "sysctl",
        namespaced: true,
        fast: None,
        slow: Some((SlowCadence::Scan, |cfg, ctx| Box::new(sysctl::Sysctl::new(cfg, ctx)))),
    },
    SourceInfo {
        name: "drop_reasons",
        namespaced: true,
        // Served every sample from the map's last read, which is once a second.
        fast: Some((Cadence::Sample, |cfg, ctx| {
            Box::new(drop_reasons::DropReasons::new(cfg, ctx))
        })),
        slow: None,
    },
    SourceInfo {
        name: "filefd",
        namespaced: false,
        fast: Some((Cadence::Sample, |cfg, _| Box::new(filefd::FileFd::new(cfg)))),
        slow: None,
    },
    SourceInfo {
        name: "processes",
        namespaced: false,
        fast: None,
        slow: Some((SlowCadence::Scan, |cfg, _| Box::new(processes::Processes::new(cfg)))),
    },
    SourceInfo {
        name: "process",
        namespaced: false,
        fast: Some((Cadence::Counter, |_, _| Box::new(process::Process::new()))),
        slow: None,
    },
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_collector_has_its_source_and_no_source_is_without_a_collector() {
        let collectors: Vec<&str> = crate::collectors::COLLECTORS.iter().map(|c| c.name).collect();
        let sources: Vec<&str> = super::SOURCES.iter().map(|s| s.name).collect();
        assert_eq!(collectors, sources);
    }
}

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
                    self.warned = if absent {
                        log::debug!("source {name} is down: not available on this kernel: {msg}");
                        false
                    } else if self.quiet {
                        log::debug!("source {name} is down: {msg}");
                        false
                    } else {
                        self.repeats
                            .log(log::Level::Warn, &format!("source {name} is down: {msg}"))
                    };
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

/// Keeps the best `k` of `items` in the order `cmp` (best first), sorted: a linear
/// selection, then a sort of the `k` kept. The one top-K of every source whose labels
/// must stay bounded (listeners, remotes, processes).
pub fn top_k<T>(items: &mut Vec<T>, k: usize, mut cmp: impl FnMut(&T, &T) -> std::cmp::Ordering) {
    if items.len() > k {
        items.select_nth_unstable_by(k, &mut cmp);
        items.truncate(k);
    }
    items.sort_unstable_by(cmp);
}

/// Address and port label values, formatted into buffers that are reused.
#[derive(Debug, Default)]
pub struct AddrPortLabels {
    addr: String,
    port: String,
}

impl AddrPortLabels {
    pub fn format(&mut self, addr: std::net::IpAddr, port: u16) -> (&str, &str) {
        use std::fmt::Write as _;
        self.addr.clear();
        let _ = write!(self.addr, "{addr}");
        self.port.clear();
        let _ = write!(self.port, "{port}");
        (&self.addr, &self.port)
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
