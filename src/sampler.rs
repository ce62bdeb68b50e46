//! The clock: runs every enabled source on its own thread (off the async runtime), keeps
//! the sliding-window peaks, and publishes one immutable snapshot per tick. A scrape only
//! encodes the latest snapshot; it never touches the kernel.
//!
//! Each source has a cadence ([`Cadence`]): sources with pressure gauges run every
//! `--sample.interval`, counter-only sources every second, hash-walking dumps every
//! `--scan.interval`. Between runs a source's last output is served from its cache.
//!
//! Namespaced sources run in the exporter's own network namespace and, with
//! `--collector.netns`, in every other namespace discovery finds: the sampler thread
//! enters the namespace (`setns`), runs that namespace's own instances of the sources
//! (whose files and sockets, opened there, stay bound to it) and returns. Other
//! namespaces are sampled every `--netns.interval`, and their hash-walking dumps run
//! every `--netns.scan-interval`, each namespace at its own phase so the walks spread.

use std::collections::HashMap;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::Config;
use crate::metrics;
use crate::netns::{self, Found, NsKey};
use crate::peak::Peaks;
use crate::pods;
use crate::snapshot::Snapshot;
use crate::source::{Cadence, Source, SourceError, SourceInfo, SourceStatus};

/// How long a source the kernel lacks is left alone before it is tried again (a module
/// such as nf_conntrack may be loaded later).
const ABSENT_RETRY: Duration = Duration::from_secs(10);

/// What scrapes read: `None` until the first sample.
pub type Published = watch::Receiver<Option<Arc<Snapshot>>>;

struct Slot {
    source: Box<dyn Source>,
    status: SourceStatus,
    retry_at: Option<Instant>,
    /// Run the source every this many ticks (its cadence).
    every_ticks: u64,
    /// Series carry the namespace's labels.
    namespaced: bool,
    /// The source's output of its last run, served on every tick until the next run.
    cache: Snapshot,
}

/// The sources of one network namespace.
struct Group {
    /// Rendered labels of the namespace: `netns="..."` and, for a pod, `namespace`/`pod`.
    labels: String,
    /// The namespace, to enter (`None`: the exporter's own, which the thread is in).
    ns: Option<File>,
    /// Ticks are offset by this much, so that namespaces do not all run at once.
    phase: u64,
    slots: Vec<Slot>,
    /// Pod UID from the cgroup of a process in the namespace, while its pod is unknown.
    pending_pod: Option<(PathBuf, String)>,
}

/// Discovery of the node's other network namespaces.
struct Discovery {
    procfs: PathBuf,
    pod_logs: PathBuf,
    own: NsKey,
    /// The initial namespace, labelled `host`.
    init: Option<NsKey>,
    own_file: File,
    /// Discovery, and the sources of other namespaces, run every this many ticks
    /// (`--netns.interval`); their hash-walking dumps every `scan_ticks`.
    every_ticks: u64,
    scan_ticks: u64,
    /// The configuration other namespaces' sources are built with: their own scans
    /// (the listeners' SYN_RECV walk) follow `--netns.scan-interval`.
    ns_cfg: Config,
    max: usize,
    found: HashMap<NsKey, Found>,
    groups: HashMap<NsKey, Group>,
    omitted: usize,
    duration: Duration,
    errors: HashMap<&'static str, u64>,
    /// The last discovery failed (logged once, until it works again).
    failing: bool,
}

pub struct Sampler {
    own: Group,
    sources: Vec<&'static SourceInfo>,
    discovery: Option<Discovery>,
    peaks: Peaks,
    interval: Duration,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    spare: Arc<Snapshot>,
    overruns: u64,
    ticks: u64,
}

/// How many sample ticks make up `interval` (at least one).
fn ticks_for(interval: Duration, sample: Duration) -> u64 {
    let n = interval.as_nanos().div_ceil(sample.as_nanos().max(1));
    u64::try_from(n).unwrap_or(u64::MAX).max(1)
}

fn slot(source: Box<dyn Source>, every_ticks: u64, namespaced: bool, quiet: bool) -> Slot {
    Slot {
        source,
        status: SourceStatus::new(quiet),
        retry_at: None,
        every_ticks,
        namespaced,
        cache: Snapshot::new(),
    }
}

fn netns_label(key: NsKey, init: Option<NsKey>) -> String {
    if Some(key) == init {
        r#"netns="host""#.to_string()
    } else {
        format!(r#"netns="{}""#, key.1)
    }
}

fn with_pod(netns: &str, pod: &pods::Pod) -> String {
    let mut labels = format!("{netns},");
    crate::snapshot::render_labels(&mut labels, &[("namespace", &pod.namespace), ("pod", &pod.name)]);
    labels
}

impl Sampler {
    /// Builds the sources enabled in `cfg` and a sampler over them.
    pub fn from_config(cfg: &Config) -> (Self, Published) {
        let (tx, rx) = watch::channel(None);
        let sources: Vec<&'static SourceInfo> = cfg.sources.clone();
        let own_key = netns::key_of(std::path::Path::new("/proc/thread-self/ns/net")).ok();
        let init = netns::init_key(&cfg.roots.procfs);
        let own_label = match own_key {
            Some(k) => netns_label(k, init),
            None => r#"netns="host""#.to_string(),
        };
        let own = Group {
            labels: own_label,
            ns: None,
            phase: 0,
            slots: sources
                .iter()
                .map(|s| {
                    let interval = match s.cadence {
                        Cadence::Sample => cfg.sample_interval,
                        Cadence::Second => Duration::from_secs(1),
                        Cadence::Scan => cfg.scan_interval,
                    };
                    slot(
                        (s.build)(cfg),
                        ticks_for(interval, cfg.sample_interval),
                        s.namespaced,
                        false,
                    )
                })
                .collect(),
            pending_pod: None,
        };
        let discovery = match (cfg.netns, own_key) {
            (true, Some(own)) if sources.iter().any(|s| s.namespaced) => match File::open("/proc/thread-self/ns/net") {
                Ok(own_file) => Some(Discovery {
                    procfs: cfg.roots.procfs.clone(),
                    pod_logs: cfg.pod_logs.clone(),
                    own,
                    init,
                    own_file,
                    every_ticks: ticks_for(cfg.netns_interval, cfg.sample_interval),
                    scan_ticks: ticks_for(cfg.netns_scan_interval.max(cfg.netns_interval), cfg.sample_interval),
                    ns_cfg: Config {
                        scan_interval: cfg.netns_scan_interval,
                        ..cfg.clone()
                    },
                    max: cfg.netns_max,
                    found: HashMap::new(),
                    groups: HashMap::new(),
                    omitted: 0,
                    duration: Duration::ZERO,
                    errors: HashMap::new(),
                    failing: false,
                }),
                Err(e) => {
                    log::warn!("cannot open the exporter's own network namespace ({e}); sampling only it");
                    None
                }
            },
            _ => None,
        };
        let sampler = Self {
            own,
            sources,
            discovery,
            peaks: Peaks::new(cfg.peak_window),
            interval: cfg.sample_interval,
            tx,
            spare: Arc::new(Snapshot::new()),
            overruns: 0,
            ticks: 0,
        };
        (sampler, rx)
    }

    /// Takes one sample of every source and publishes it.
    pub fn tick(&mut self) {
        let now = Instant::now();
        if Arc::get_mut(&mut self.spare).is_none() {
            // A slow scrape still holds the spare: let it keep it.
            self.spare = Arc::new(Snapshot::new());
        }
        let Some(snap) = Arc::get_mut(&mut self.spare) else {
            return;
        };
        snap.clear();
        snap.taken_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        run_group(&mut self.own, self.ticks, now, snap);
        if let Some(d) = self.discovery.as_mut() {
            if self.ticks % d.every_ticks == 0 {
                discover(d, &self.sources);
            }
            if !sample_foreign(d, self.ticks, now, snap) {
                self.discovery = None;
            }
        }
        self.ticks += 1;
        self.peaks.apply(snap, now);
        self.emit_self_metrics_into_spare();
        if let Some(snap) = Arc::get_mut(&mut self.spare) {
            snap.finish();
        }
        let published = self.tx.send_replace(Some(Arc::clone(&self.spare)));
        // The previous snapshot becomes the spare; it is refilled next tick once no
        // scrape holds it.
        if let Some(prev) = published {
            self.spare = prev;
        }
    }

    fn emit_self_metrics_into_spare(&mut self) {
        let Some(snap) = Arc::get_mut(&mut self.spare) else {
            return;
        };
        for slot in &self.own.slots {
            let name = slot.source.name();
            slot.status.emit(name, snap);
            slot.source.visit_status(&mut |sub, status| status.emit(sub, snap));
        }
        if let Some(d) = &self.discovery {
            snap.push(&metrics::NETNS_SAMPLED, &[], d.groups.len() as f64);
            snap.push(&metrics::NETNS_OMITTED, &[], d.omitted as f64);
            snap.push(&metrics::NETNS_DISCOVERY_DURATION, &[], d.duration.as_secs_f64());
            for s in self.sources.iter().filter(|s| s.namespaced) {
                let down = d
                    .groups
                    .values()
                    .flat_map(|g| &g.slots)
                    .filter(|slot| slot.source.name() == s.name && slot.status.samples > 0 && !slot.status.up)
                    .count();
                snap.push(&metrics::NETNS_SOURCE_DOWN, &[("source", s.name)], down as f64);
                let errors = d.errors.get(s.name).copied().unwrap_or(0);
                snap.push(&metrics::NETNS_SOURCE_ERRORS, &[("source", s.name)], errors as f64);
            }
        }
        snap.push(&metrics::SAMPLER_OVERRUNS, &[], self.overruns as f64);
        snap.push(&metrics::SAMPLE_INTERVAL, &[], self.interval.as_secs_f64());
        snap.push(&metrics::PEAK_WINDOW, &[], self.peaks.window().as_secs_f64());
        snap.push(&metrics::LAST_SAMPLE, &[], snap.taken_at);
        snap.push(
            &metrics::BUILD_INFO,
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("NETPRESSURE_REVISION")),
            ],
            1.0,
        );
    }

    /// Samples on the clock until `stop` receives a message or its sender is dropped.
    /// A tick that overruns the interval skips the ticks it missed (counted) instead of
    /// bunching them up.
    pub fn run(mut self, stop: Receiver<()>) {
        let mut next = Instant::now();
        loop {
            self.tick();
            next += self.interval;
            let now = Instant::now();
            if next < now {
                let behind = now.duration_since(next).as_nanos() / self.interval.as_nanos().max(1) + 1;
                let behind = u32::try_from(behind).unwrap_or(u32::MAX);
                self.overruns += u64::from(behind);
                next += self.interval * behind;
            }
            match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Runs the due sources of a group (the thread already in its namespace) and appends
/// every source's cached output, labelled, to `snap`.
fn run_group(g: &mut Group, ticks: u64, now: Instant, snap: &mut Snapshot) {
    for slot in &mut g.slots {
        if (ticks + g.phase) % slot.every_ticks == 0 {
            sample_slot(slot, now);
        }
    }
    append_group(g, snap);
}

fn append_group(g: &Group, snap: &mut Snapshot) {
    for slot in &g.slots {
        if slot.namespaced {
            snap.extend_labelled(&slot.cache, &g.labels);
        } else {
            snap.extend_from(&slot.cache);
        }
    }
}

/// Finds the node's namespaces and brings the tracked set in line: new ones get their
/// own source instances (opened lazily, inside the namespace), gone ones are dropped
/// with their files and sockets, which also releases the namespace.
fn discover(d: &mut Discovery, sources: &[&'static SourceInfo]) {
    let t = Instant::now();
    if let Err(e) = netns::discover(&d.procfs, &mut d.found) {
        if !d.failing {
            log::warn!("namespace discovery: {}: {e}", d.procfs.display());
            d.failing = true;
        }
        return;
    }
    d.failing = false;
    d.found.remove(&d.own);
    d.groups.retain(|k, _| d.found.contains_key(k));
    let mut new: Vec<NsKey> = d.found.keys().filter(|k| !d.groups.contains_key(k)).copied().collect();
    new.sort_unstable();
    let room = d.max.saturating_sub(d.groups.len());
    d.omitted = new.len().saturating_sub(room);
    for key in new.into_iter().take(room) {
        let Some(found) = d.found.get(&key) else { continue };
        let ns = match netns::open(found) {
            Ok(f) => f,
            Err(e) => {
                log::debug!("namespace {}: cannot open {}: {e}", key.1, found.path.display());
                continue;
            }
        };
        let netns = netns_label(key, d.init);
        let mut labels = netns.clone();
        let mut pending_pod = None;
        if let Some(pid) = found.pid {
            let cgroup = std::fs::read_to_string(d.procfs.join(pid.to_string()).join("cgroup")).unwrap_or_default();
            if let Some(uid) = pods::pod_uid(&cgroup) {
                match pods::lookup(&d.pod_logs, &uid) {
                    Some(pod) => labels = with_pod(&netns, &pod),
                    None => pending_pod = Some((d.pod_logs.clone(), uid)),
                }
            }
        }
        let slots = sources
            .iter()
            .filter(|s| s.namespaced)
            .map(|s| {
                let every = match s.cadence {
                    Cadence::Scan => d.scan_ticks,
                    Cadence::Sample | Cadence::Second => d.every_ticks,
                };
                slot((s.build)(&d.ns_cfg), every, true, true)
            })
            .collect();
        d.groups.insert(
            key,
            Group {
                labels,
                ns: Some(ns),
                // Spread namespaces over the scan interval by inode.
                phase: key.1 % d.scan_ticks,
                slots,
                pending_pod,
            },
        );
    }
    // Pods whose log directory appeared after their namespace did.
    for g in d.groups.values_mut() {
        if let Some((logs, uid)) = &g.pending_pod {
            if let Some(pod) = pods::lookup(logs, uid) {
                g.labels = with_pod(&g.labels, &pod);
                g.pending_pod = None;
            }
        }
    }
    d.duration = t.elapsed();
}

/// Enters each tracked namespace whose sources are due, runs them, and returns to the
/// exporter's own namespace; appends every group's cached output. Returns false when
/// other namespaces cannot be sampled at all (no CAP_SYS_ADMIN).
fn sample_foreign(d: &mut Discovery, ticks: u64, now: Instant, snap: &mut Snapshot) -> bool {
    let mut broken = Vec::new();
    for (key, g) in &mut d.groups {
        let due = g.slots.iter().any(|s| (ticks + g.phase) % s.every_ticks == 0);
        if let (true, Some(ns)) = (due, g.ns.as_ref()) {
            match crate::sys::setns_net(ns) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    log::warn!(
                        "cannot enter other network namespaces ({e}): CAP_SYS_ADMIN is needed; sampling only the exporter's own"
                    );
                    return false;
                }
                Err(e) => {
                    log::debug!("namespace {}: setns: {e}", key.1);
                    broken.push(*key);
                    continue;
                }
            }
            for slot in &mut g.slots {
                if (ticks + g.phase) % slot.every_ticks == 0 {
                    let before = slot.status.errors;
                    sample_slot(slot, now);
                    if slot.status.errors > before {
                        *d.errors.entry(slot.source.name()).or_default() += slot.status.errors - before;
                    }
                }
            }
            if let Err(e) = crate::sys::setns_net(&d.own_file) {
                // Cannot happen short of a kernel bug; stop sampling other namespaces
                // rather than risk sampling the wrong one as our own.
                log::error!("cannot return to the exporter's own network namespace: {e}");
                return false;
            }
        }
        append_group(g, snap);
    }
    for key in broken {
        d.groups.remove(&key);
    }
    true
}

/// Runs one source into its cache. A failed run leaves the cache empty: nothing
/// half-read is served.
fn sample_slot(slot: &mut Slot, now: Instant) {
    let name = slot.source.name();
    if slot.retry_at.is_some_and(|t| now < t) {
        return;
    }
    slot.cache.clear();
    let t = Instant::now();
    let cache = &mut slot.cache;
    let source = &mut slot.source;
    let result = catch_unwind(AssertUnwindSafe(|| source.sample(cache))).unwrap_or_else(|_| {
        Err(SourceError::Other(
            "the source panicked; this is a bug, please report it".into(),
        ))
    });
    let took = t.elapsed();
    match &result {
        Ok(()) => slot.retry_at = None,
        Err(e) => {
            slot.cache.clear();
            slot.retry_at = e.is_absent().then(|| now + ABSENT_RETRY);
        }
    }
    slot.status.record(name, result.as_ref().map(|_| ()), took);
}
