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

/// Why the namespaced sources of the exporter's own namespace are down while the sampler
/// thread cannot get back into it.
const DISPLACED: &str =
    "the sampler thread could not return to the exporter's own network namespace; not sampled until it does";

/// Moves the sampler thread into a network namespace (`setns`); a test replaces it to
/// inject failures.
type Switch = Box<dyn FnMut(&File) -> std::io::Result<()> + Send>;

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
    switch: Switch,
    /// Failed attempts to enter a namespace, and whether EPERM has been logged.
    enter_errors: u64,
    denied_logged: bool,
    /// Returning to the own namespace failed: the thread may be in another one. Until
    /// a return succeeds, nothing that depends on the thread's namespace runs.
    displaced: bool,
}

impl Discovery {
    /// Tries to move the thread back into the exporter's own namespace.
    fn go_home(&mut self) -> bool {
        match (self.switch)(&self.own_file) {
            Ok(()) => {
                if self.displaced {
                    log::info!("the sampler thread is back in the exporter's own network namespace");
                }
                self.displaced = false;
                true
            }
            Err(e) => {
                if !self.displaced {
                    log::error!(
                        "cannot return to the exporter's own network namespace: {e}; its namespaced sources and other namespaces are not sampled until a return succeeds"
                    );
                }
                self.displaced = true;
                false
            }
        }
    }
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

/// Whether a slot runs on this tick: on its cadence (offset by its group's phase), and
/// at once when it has never run, so that a newly found namespace is served in full
/// from its first round.
fn due(slot: &Slot, ticks: u64, phase: u64) -> bool {
    (ticks + phase) % slot.every_ticks == 0 || slot.status.samples == 0
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
    if netns::is_init(key, init) {
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
                    switch: Box::new(|f: &File| crate::sys::setns_net(f)),
                    enter_errors: 0,
                    denied_logged: false,
                    displaced: false,
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
        // A thread that could not return home is never trusted with its own namespace's
        // sources until a return succeeds.
        let displaced = self.discovery.as_mut().is_some_and(|d| d.displaced && !d.go_home());
        run_group(&mut self.own, self.ticks, now, snap, displaced);
        if let Some(d) = self.discovery.as_mut().filter(|_| !displaced) {
            if self.ticks % d.every_ticks == 0 {
                discover(d, &self.sources);
            }
            sample_foreign(d, self.ticks, now, snap);
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
            snap.push(&metrics::NETNS_ENTER_ERRORS, &[], d.enter_errors as f64);
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
/// every source's cached output, labelled, to `snap`. With `displaced`, the thread may
/// be in another namespace: namespaced sources are reported down and serve nothing.
fn run_group(g: &mut Group, ticks: u64, now: Instant, snap: &mut Snapshot, displaced: bool) {
    for slot in &mut g.slots {
        if displaced && slot.namespaced {
            slot.cache.clear();
            let err = SourceError::Other(DISPLACED.into());
            slot.status.record(slot.source.name(), Err(&err), Duration::ZERO);
        } else if due(slot, ticks, g.phase) {
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
        let ns = match netns::open(found, key) {
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
            let cgroup = crate::procfs::read(&d.procfs.join(pid.to_string()).join("cgroup")).unwrap_or_default();
            if let Some(uid) = pods::pod_uid(&String::from_utf8_lossy(&cgroup)) {
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
                let mut source = (s.build)(&d.ns_cfg);
                source.set_quiet();
                slot(source, every, true, true)
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
/// exporter's own namespace; appends every group's cached output.
///
/// A namespace that cannot be entered (EPERM without CAP_SYS_ADMIN, or gone) is
/// dropped and tried again when discovery finds it next; the others go on. A failed
/// return stops the round and marks the discovery displaced (see [`Discovery::go_home`]).
fn sample_foreign(d: &mut Discovery, ticks: u64, now: Instant, snap: &mut Snapshot) {
    let mut broken = Vec::new();
    let mut groups = std::mem::take(&mut d.groups);
    for (key, g) in &mut groups {
        let any_due = g.slots.iter().any(|s| due(s, ticks, g.phase));
        if let (true, Some(ns)) = (any_due, g.ns.as_ref()) {
            // A failed setns leaves the thread where it was: at home.
            if let Err(e) = (d.switch)(ns) {
                d.enter_errors += 1;
                if e.raw_os_error() == Some(libc::EPERM) && !d.denied_logged {
                    log::warn!(
                        "cannot enter network namespace {} ({e}): CAP_SYS_ADMIN is needed to sample other namespaces",
                        key.1
                    );
                    d.denied_logged = true;
                } else {
                    log::debug!("namespace {}: setns: {e}", key.1);
                }
                broken.push(*key);
                continue;
            }
            for slot in &mut g.slots {
                if due(slot, ticks, g.phase) {
                    let before = slot.status.errors;
                    sample_slot(slot, now);
                    if slot.status.errors > before {
                        *d.errors.entry(slot.source.name()).or_default() += slot.status.errors - before;
                    }
                }
            }
            if !d.go_home() {
                // Nothing more this round: every later namespace would be entered from
                // an unknown one, and the own namespace must wait for a return.
                break;
            }
        }
        append_group(g, snap);
    }
    for key in broken {
        groups.remove(&key);
    }
    d.groups = groups;
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

#[cfg(test)]
mod tests {
    //! The sampler's namespace switching against the real kernel, with failures injected
    //! through [`Discovery::switch`]. Needs root (the suite runs as root).
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::source::SOURCES;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A namespace pinned by `ip netns add`, deleted on drop.
    struct TestNs(String);

    impl TestNs {
        fn new(tag: &str) -> Self {
            let name = format!("np-unit-{tag}-{}", std::process::id());
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            assert!(Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success());
            Self(name)
        }

        fn ino(&self) -> u64 {
            std::fs::metadata(format!("/run/netns/{}", self.0)).unwrap().ino()
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    const REAL: u64 = 0;
    const FAIL_RETURN: u64 = 1;
    // Any other value: EPERM when entering the namespace with that inode.

    fn sampler(mode: &Arc<AtomicU64>) -> (Sampler, Published) {
        let cfg = Config {
            sources: SOURCES.iter().filter(|s| s.name == "sockstat").collect(),
            netns_interval: Config::default().sample_interval,
            ..Config::default()
        };
        let (mut s, rx) = Sampler::from_config(&cfg);
        let own_ino = netns::key_of(std::path::Path::new("/proc/thread-self/ns/net"))
            .unwrap()
            .1;
        let mode = Arc::clone(mode);
        s.discovery.as_mut().expect("netns discovery").switch = Box::new(move |f: &File| {
            let ino = f.metadata()?.ino();
            match mode.load(Ordering::SeqCst) {
                FAIL_RETURN if ino == own_ino => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
                m if m == ino => Err(std::io::Error::from_raw_os_error(libc::EPERM)),
                _ => crate::sys::setns_net(f),
            }
        });
        (s, rx)
    }

    /// Whether the published snapshot has an in-use series labelled with `netns`.
    fn serves(rx: &Published, netns: &str) -> bool {
        let snap = rx.borrow().clone().unwrap();
        let prefix = format!("netns=\"{netns}\"");
        let found = snap
            .iter()
            .any(|(d, l, _)| d.name == "netpressure_tcp_sockets_in_use" && l.starts_with(&prefix));
        found
    }

    fn own_label() -> String {
        let key = netns::key_of(std::path::Path::new("/proc/thread-self/ns/net")).unwrap();
        let init = netns::init_key(std::path::Path::new("/proc"));
        netns_label(key, init)
            .trim_start_matches("netns=\"")
            .trim_end_matches('"')
            .to_string()
    }

    #[test]
    fn a_failed_return_home_serves_nothing_under_the_own_label_until_it_succeeds() {
        let (a, b) = (TestNs::new("home-a"), TestNs::new("home-b"));
        let own = own_label();
        let mode = Arc::new(AtomicU64::new(REAL));
        let (mut s, rx) = sampler(&mode);
        s.tick();
        assert!(serves(&rx, &own) && serves(&rx, &a.ino().to_string()) && serves(&rx, &b.ino().to_string()));

        // The return after the first namespace fails: the thread stays in that namespace.
        mode.store(FAIL_RETURN, Ordering::SeqCst);
        s.tick();
        for _ in 0..3 {
            s.tick();
            assert!(!serves(&rx, &own), "a series under the own label while displaced");
            let snap = rx.borrow().clone().unwrap();
            assert_eq!(snap.value("netpressure_source_up", r#"source="sockstat""#), Some(0.0));
        }
        // The thread really is elsewhere: nothing above was read from the wrong namespace.
        assert_ne!(
            netns::key_of(std::path::Path::new("/proc/thread-self/ns/net"))
                .unwrap()
                .1,
            s.discovery.as_ref().unwrap().own.1
        );

        mode.store(REAL, Ordering::SeqCst);
        s.tick();
        s.tick();
        assert!(serves(&rx, &own) && serves(&rx, &a.ino().to_string()) && serves(&rx, &b.ino().to_string()));
        assert_eq!(own_label(), own);
    }

    #[test]
    fn eperm_on_one_namespace_leaves_the_others_sampled() {
        let (a, b) = (TestNs::new("eperm-a"), TestNs::new("eperm-b"));
        let own = own_label();
        let mode = Arc::new(AtomicU64::new(a.ino()));
        let (mut s, rx) = sampler(&mode);
        for _ in 0..3 {
            s.tick();
            assert!(serves(&rx, &own) && serves(&rx, &b.ino().to_string()));
            assert!(!serves(&rx, &a.ino().to_string()));
        }
        assert!(s.discovery.as_ref().unwrap().enter_errors >= 3);
        // Allowed again: found and sampled at the next discovery.
        mode.store(REAL, Ordering::SeqCst);
        s.tick();
        s.tick();
        assert!(serves(&rx, &a.ino().to_string()) && serves(&rx, &b.ino().to_string()));
    }
}
