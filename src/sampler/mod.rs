//! The clock. Two lanes, each on its own thread, so that slow work never delays a
//! sample:
//!
//! - the **fast lane** (this module's [`Sampler`], the `sampler` thread) takes the
//!   pressure gauges every `--sample.interval` in the exporter's own namespace and every
//!   `--netns.sample-interval` in every other namespace it tracks (without entering
//!   them: their handles stay open), keeps the sliding-window peaks, merges the slow
//!   lane's latest output and publishes one immutable snapshot per tick;
//! - the **slow lane** ([`SlowLane`], the `scanner` thread) discovers namespaces, reads
//!   their sysctls, and runs the work that walks the kernel's hash tables or every
//!   process: SYN_RECV and remote-port dumps, the process scan, every `--scan.interval`
//!   (other namespaces: `--netns.scan-interval`, spread by inode).
//!
//! The slow lane tells the fast lane which namespaces to add and drop ([`Change`]).
//! A scrape only encodes the latest snapshot; it never touches the kernel.
//!
//! Files: `slot.rs` (one source in one namespace), `lane.rs` (the namespaces of one
//! lane and how another namespace is sampled), `home.rs` (entering a namespace and
//! coming back), `discovery.rs` (which namespaces, with which labels).

pub mod discovery;
pub mod home;
pub mod lane;
pub mod slot;

use std::collections::BTreeMap;
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::{self, Desc};
use crate::netns::{self, NsKey};
use crate::peak::Peaks;
use crate::snapshot::Snapshot;
use crate::source::breakdown::Owner;
use crate::source::settings::SettingsReader;
use crate::source::{Cadence, NsContext, SlowCadence, SourceInfo, Wake};
use discovery::{Discovery, Failure, Target};
use home::Home;
use lane::{Families, Group, Lane};
use slot::{ticks_for, Slot};

/// The slow lane's tick: its cadences (`--scan.interval`, `--netns.interval`,
/// `--netns.scan-interval`) are whole seconds.
const SLOW_TICK: Duration = Duration::from_secs(1);

/// The most ticks the slow lane sleeps through when nothing is due (it wakes earlier
/// when due work or evidence asks).
const SLOW_MAX_SLEEP: u64 = 10;

/// How far past its next due round the slow lane may be before `/-/healthy` fails:
/// three ticks beyond the longest a round may take on purpose (a conntrack breakdown's
/// dump, cut at `--collector.conntrack.breakdown-timeout`). The slow lane publishes when
/// its next round is due, so a lane that sleeps because nothing is due is not late.
pub fn slow_round_deadline(cfg: &Config) -> Duration {
    3 * SLOW_TICK + cfg.breakdown_timeout
}

/// Panics caught in the sampler, by source (or slow-lane step), for
/// `netpressure_source_panics_total`. Process-wide: both lanes count here.
static PANICS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Counts a caught panic of `what` and logs it (at most once per ten minutes per
/// `what`, through the repeat limiter).
pub fn record_panic(what: &'static str) {
    static REPEATS: Mutex<BTreeMap<&'static str, crate::logging::Repeats>> = Mutex::new(BTreeMap::new());
    *lock(&PANICS).entry(what).or_default() += 1;
    let msg = format!("{what} panicked; this is a bug, please report it (the sampler goes on)");
    lock(&REPEATS).entry(what).or_default().log(log::Level::Error, &msg);
}

fn emit_panics(snap: &mut Snapshot) {
    for (what, n) in lock(&PANICS).iter() {
        snap.push(&metrics::SOURCE_PANICS, &[("source", what)], *n as f64);
    }
}

/// A fault injected by a test at a named point of the slow lane (`cfg(test)` only;
/// a no-op in the binary).
#[cfg(test)]
pub(crate) mod fault {
    use std::cell::Cell;
    thread_local! {
        pub static AT: Cell<Option<&'static str>> = const { Cell::new(None) };
    }

    pub fn point(name: &'static str) {
        if AT.with(Cell::get) == Some(name) {
            panic!("fault injected at {name}");
        }
    }
}

#[cfg(not(test))]
pub(crate) mod fault {
    #[inline(always)]
    pub fn point(_: &'static str) {}
}
/// How often a breakdown's unknown source may bring discovery and the owners'
/// refresh forward.
const OWNERS_ASKED: Duration = Duration::from_secs(2);

/// How long the first published snapshot waits for the slow lane's first round.
const FIRST_ROUND_WAIT: Duration = Duration::from_secs(5);

/// Ends [`Sampler::run`] when dropped: the sampler stops at once (it is woken), not at
/// its next tick.
pub struct StopSender(Arc<StopState>);

/// The sampler's side of [`stop_pair`].
pub struct StopReceiver(Arc<StopState>);

#[derive(Default)]
struct StopState {
    stopped: AtomicBool,
    wake: Wake,
}

/// A stop signal for [`Sampler::run`]. The sampler sleeps as the slow lane does, with
/// `park_timeout` ([`Wake`]), which costs one futex wait a tick; a channel's
/// `recv_timeout` spun and registered wakers every tick, which showed in the idle
/// profile.
pub fn stop_pair() -> (StopSender, StopReceiver) {
    let state = Arc::new(StopState::default());
    (StopSender(Arc::clone(&state)), StopReceiver(state))
}

impl Drop for StopSender {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        self.0.wake.ask();
    }
}

impl StopReceiver {
    /// Sleeps until `deadline` or the stop, whichever comes first; whether stopped.
    fn sleep_until(&self, deadline: Instant) -> bool {
        self.0.wake.sleep_until(deadline, &self.0.stopped);
        self.0.stopped.load(Ordering::SeqCst)
    }
}

/// What scrapes read: `None` until the first sample.
pub type Published = watch::Receiver<Option<Arc<Snapshot>>>;

/// What the slow lane tells the fast lane.
pub enum Change {
    /// Sample this namespace: its labels, the namespace to enter, its shared context.
    Add {
        key: NsKey,
        labels: String,
        ns: Arc<File>,
        ctx: Arc<NsContext>,
    },
    Relabel {
        key: NsKey,
        labels: String,
    },
    Remove(NsKey),
}

/// Builds the groups of one lane for one namespace from the registry.
#[derive(Clone)]
struct Builder {
    sources: Vec<&'static SourceInfo>,
    /// Own namespace: the flags as given.
    own: Config,
    /// Other namespaces: their scans follow `--netns.scan-interval`, their counters
    /// `--netns.interval`.
    other: Config,
}

impl Builder {
    fn new(cfg: &Config) -> Self {
        Self {
            sources: crate::source::enabled(&cfg.sources),
            own: cfg.clone(),
            other: Config {
                scan_interval: cfg.netns_scan_interval,
                counter_interval: cfg.netns_interval,
                other_namespace: true,
                ..cfg.clone()
            },
        }
    }

    /// The fast lane's slots: `own` for the exporter's namespace (node-wide sources
    /// included), else another namespace's.
    fn fast_slots(&self, own: bool, ctx: &Arc<NsContext>) -> Vec<Slot> {
        let (cfg, tick) = (if own { &self.own } else { &self.other }, self.own.sample_interval);
        self.sources
            .iter()
            .filter(|s| own || s.namespaced)
            .filter_map(|s| {
                let (cadence, build) = s.fast?;
                let every = match (cadence, own) {
                    (Cadence::Sample, true) => 1,
                    (Cadence::Counter, true) => ticks_for(cfg.counter_interval, tick),
                    (Cadence::Sample, false) => ticks_for(cfg.netns_sample_interval, tick),
                    (Cadence::Counter, false) => ticks_for(cfg.netns_interval, tick),
                };
                Some(Slot::new(build(cfg, ctx), every, s.namespaced, !own))
            })
            .collect()
    }

    /// The slow lane's slots, run every scan.
    fn slow_slots(&self, own: bool, ctx: &Arc<NsContext>) -> Vec<Slot> {
        let cfg = if own { &self.own } else { &self.other };
        let scan = ticks_for(cfg.scan_interval, SLOW_TICK);
        self.sources
            .iter()
            .filter(|s| own || s.namespaced)
            .filter_map(|s| {
                let (cadence, build) = s.slow?;
                let every = match cadence {
                    SlowCadence::Scan => scan,
                    SlowCadence::Evidence => u64::MAX,
                };
                Some(Slot::new(build(cfg, ctx), every, s.namespaced, !own))
            })
            .collect()
    }

    fn settings(&self, own: bool) -> Option<(SettingsReader, u64)> {
        let cfg = if own { &self.own } else { &self.other };
        self.sources
            .iter()
            .any(|s| s.namespaced)
            .then(|| (SettingsReader::new(cfg), ticks_for(cfg.scan_interval, SLOW_TICK)))
    }
}

use crate::sync::lock;

/// Which families other namespaces serve (`--netns.families`).
fn families(cfg: &Config) -> Families {
    match &cfg.netns_families {
        None => Arc::new(|_: &'static Desc| true),
        Some(names) => {
            let names = names.clone();
            Arc::new(move |d: &'static Desc| names.iter().any(|n| n == d.name))
        }
    }
}

/// The own namespace's key, its `netns` label value, and a descriptor of it to come
/// back to.
fn own_namespace(procfs: &std::path::Path) -> (Option<NsKey>, String, Option<File>) {
    let path = std::path::Path::new("/proc/thread-self/ns/net");
    let key = netns::key_of(path).ok();
    let value = match key {
        Some(k) => discovery::netns_value(k, netns::init_key(procfs)),
        None => "host".to_string(),
    };
    (key, value, File::open(path).ok())
}

pub struct Sampler {
    fast: Lane,
    /// Until [`Sampler::run`] moves it to its thread (tests and benches step it here).
    slow: Option<SlowLane>,
    /// There is a slow lane (its rounds are watched by `/-/healthy`).
    has_slow: bool,
    slow_out: Arc<Mutex<Arc<Snapshot>>>,
    changes: Receiver<Change>,
    builder: Builder,
    peaks: Peaks,
    interval: Duration,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    spare: Arc<Snapshot>,
    overruns: u64,
    durations: metrics::Histogram,
    entries: Arc<home::Entries>,
    http: Option<Arc<metrics::HttpStats>>,
}

/// The slow lane: discovery, sysctls, and every scan.
pub struct SlowLane {
    lane: Lane,
    discovery: Option<Discovery>,
    discovery_every: u64,
    /// The window of `discovery_every` ticks in which discovery last ran.
    discovery_window: Option<u64>,
    changes: Sender<Change>,
    out: Arc<Mutex<Arc<Snapshot>>>,
    /// The snapshot the next round fills: the one published two rounds ago, once the
    /// fast lane has let go of it (no allocation a round in the steady state).
    spare: Arc<Snapshot>,
    builder: Builder,
    /// Discovery could not list procfs, or ran out of descriptors (logged once).
    failing: bool,
    /// The node's address owners, refreshed after each discovery when `breakdown`.
    owners: Arc<crate::source::breakdown::Owners>,
    /// When a breakdown last brought the owners' refresh forward.
    owners_asked: Option<Instant>,
    breakdown: bool,
    /// Woken by the fast lane's sources when evidence turns.
    wake: Arc<Wake>,
    cfg: Config,
    /// The ticks after the last round with nothing due ([`SlowLane::idle_ticks`]), as
    /// that round computed them for the next due round it published.
    idle: u64,
}

impl Sampler {
    /// Builds both lanes over the sources enabled in `cfg`.
    pub fn from_config(cfg: &Config) -> (Self, Published) {
        let (tx, rx) = watch::channel(None);
        let builder = Builder::new(cfg);
        let (own_key, own_netns, own_file) = own_namespace(&cfg.roots.procfs);
        let own_label = format!(r#"netns="{own_netns}""#);
        // The conntrack breakdown names the owners of source addresses: the slow lane
        // keeps one map for the node, and each namespace's address socket.
        let breakdown = cfg.sources.contains(&"conntrack") && cfg.breakdown_threshold < 1.0;
        let owners = Arc::new(crate::source::breakdown::Owners::default());
        let own_owner = breakdown.then(|| {
            Arc::new(Owner {
                netns: own_netns.clone(),
                pod: None,
            })
        });
        let entries = Arc::new(home::Entries::default());
        let sample_others = cfg.netns && builder.sources.iter().any(|s| s.namespaced);
        let homes = match (sample_others, own_key, own_file) {
            (true, Some(key), Some(file)) => match file.try_clone() {
                Ok(second) => Some((key, file, second)),
                Err(e) => {
                    log::warn!("cannot duplicate a descriptor of the own network namespace ({e}); sampling only it");
                    None
                }
            },
            (true, _, _) => {
                log::warn!("cannot open the exporter's own network namespace; sampling only it");
                None
            }
            _ => None,
        };
        let wake = Arc::new(Wake::default());
        let ctx = Arc::new(NsContext::shared(&owners, &wake, cfg, own_key));
        let own_group = |slots, settings, owner: Option<Arc<Owner>>| Group {
            labels: own_label.clone(),
            phase: 0,
            slots,
            ns: None,
            ctx: Arc::clone(&ctx),
            settings,
            settings_window: None,
            owner,
            addresses: None,
        };
        let (fast_home, slow_home, own_key) = match homes {
            Some((key, a, b)) => (
                Some(Home::new(a, Arc::clone(&entries))),
                Some(Home::new(b, Arc::clone(&entries))),
                Some(key),
            ),
            None => (None, None, None),
        };
        let fam = families(cfg);
        let fast = Lane::new(
            own_group(builder.fast_slots(true, &ctx), None, None),
            fast_home,
            Arc::clone(&fam),
        );
        let slow_lane = Lane::new(
            own_group(builder.slow_slots(true, &ctx), builder.settings(true), own_owner),
            slow_home,
            fam,
        );
        let nofile = crate::sys::nofile_soft_limit(std::process::id()).unwrap_or(1024);
        let discovery = own_key.map(|own| {
            Discovery::new(
                cfg.roots.procfs.clone(),
                cfg.pod_logs.clone(),
                own,
                cfg.netns_max,
                nofile,
            )
        });
        let (changes_tx, changes_rx) = mpsc::channel();
        // Before the slow lane's first round, its start stands for its last round.
        let mut before_first = Snapshot::new();
        before_first.taken = Some(Instant::now());
        let slow_out = Arc::new(Mutex::new(Arc::new(before_first)));
        let slow = SlowLane {
            lane: slow_lane,
            discovery,
            discovery_every: ticks_for(cfg.netns_interval, SLOW_TICK),
            discovery_window: None,
            changes: changes_tx,
            out: Arc::clone(&slow_out),
            spare: Arc::new(Snapshot::new()),
            builder: builder.clone(),
            failing: false,
            owners,
            owners_asked: None,
            breakdown,
            wake,
            cfg: cfg.clone(),
            idle: 0,
        };
        let sampler = Self {
            fast,
            slow: Some(slow),
            has_slow: true,
            slow_out,
            changes: changes_rx,
            builder,
            peaks: Peaks::new(cfg.peak_window),
            interval: cfg.sample_interval,
            tx,
            spare: Arc::new(Snapshot::new()),
            overruns: 0,
            durations: metrics::Histogram::new(&metrics::SAMPLE_DURATION_BUCKETS),
            entries,
            http: None,
        };
        (sampler, rx)
    }

    /// Serves the HTTP server's counts with the self-metrics.
    pub fn with_http_stats(mut self, stats: Arc<metrics::HttpStats>) -> Self {
        self.http = Some(stats);
        self
    }

    /// Applies what the slow lane decided about other namespaces.
    fn apply_changes(&mut self) {
        while let Ok(change) = self.changes.try_recv() {
            match change {
                Change::Add { key, labels, ns, ctx } => {
                    let slots = self.builder.fast_slots(false, &ctx);
                    let group = Group {
                        labels,
                        phase: key.1,
                        slots,
                        ns: Some(ns),
                        ctx,
                        settings: None,
                        settings_window: None,
                        owner: None,
                        addresses: None,
                    };
                    self.fast.others.insert(key, group);
                }
                Change::Relabel { key, labels } => {
                    if let Some(g) = self.fast.others.get_mut(&key) {
                        g.labels = labels;
                    }
                }
                Change::Remove(key) => self.fast.remove(&key),
            }
        }
    }

    /// Takes one sample of the fast lane, merges the slow lane's latest output, and
    /// publishes the snapshot.
    pub fn tick(&mut self) {
        let start = Instant::now();
        self.apply_changes();
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
        snap.taken = Some(std::time::Instant::now());
        // A source's panic is caught in its slot; this catches the rest (a visit to a
        // namespace), so that the sampler thread never dies with its series frozen.
        if catch_unwind(AssertUnwindSafe(|| self.fast.run(start))).is_err() {
            record_panic("fast_lane");
        }
        self.fast.append(snap);
        let slow = Arc::clone(&lock(&self.slow_out));
        snap.extend_from(&slow);
        snap.slow_round = if self.has_slow { slow.taken } else { None };
        drop(slow);
        emit_panics(snap);
        self.peaks.apply(snap, start);
        self.fast.emit_status(snap);
        snap.push(&metrics::SAMPLER_OVERRUNS, &[], self.overruns as f64);
        if let Some(http) = &self.http {
            http.emit(snap);
        }
        snap.push(&metrics::SAMPLE_INTERVAL, &[], self.interval.as_secs_f64());
        snap.push(&metrics::PEAK_WINDOW, &[], self.peaks.window().as_secs_f64());
        snap.push(&metrics::LAST_SAMPLE, &[], snap.taken_at);
        if self.fast.home.is_some() {
            snap.push(&metrics::NETNS_ROUNDS, &[], self.fast.rounds as f64);
            let entered = self.entries.done.load(Ordering::Relaxed);
            snap.push(&metrics::NETNS_ENTERED, &[], entered as f64);
            let failed = self.entries.failed.load(Ordering::Relaxed);
            snap.push(&metrics::NETNS_ENTER_ERRORS, &[], failed as f64);
        }
        snap.push(
            &metrics::BUILD_INFO,
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("NETPRESSURE_REVISION")),
            ],
            1.0,
        );
        // The duration of the previous ticks: this one is not over.
        self.durations.emit(&metrics::SAMPLE_DURATION, snap);
        snap.finish();
        let published = self.tx.send_replace(Some(Arc::clone(&self.spare)));
        // The previous snapshot becomes the spare; it is refilled next tick once no
        // scrape holds it.
        if let Some(prev) = published {
            self.spare = prev;
        }
        self.durations.observe(start.elapsed().as_secs_f64());
    }

    /// Runs one round of the slow lane here, then one fast tick: for tests and benches,
    /// which need no threads. After [`Sampler::run`] has started, only the fast tick.
    pub fn step_all(&mut self) {
        if let Some(slow) = self.slow.as_mut() {
            slow.step(Instant::now());
        }
        self.tick();
    }

    /// Samples on the clock until `stop` receives a message or its sender is dropped,
    /// with the slow lane on a thread of its own. A tick that overruns the interval
    /// skips the ticks it missed (counted) instead of bunching them up.
    pub fn run(mut self, stop: StopReceiver) {
        stop.0.wake.register();
        let stopping = Arc::new(AtomicBool::new(false));
        let (first_tx, first_rx) = mpsc::channel();
        // One sample of the fast lane's sources before the slow lane's first round, so
        // that the evidence its scans go by (sockets, the table's fill) is there: without
        // it the first round would walk the hash for nothing, and the series that say
        // so would change a second after start.
        if catch_unwind(AssertUnwindSafe(|| self.fast.run(Instant::now()))).is_err() {
            record_panic("fast_lane");
        }
        let scanner = self.slow.take().and_then(|slow| {
            let stopping = Arc::clone(&stopping);
            std::thread::Builder::new()
                .name("scanner".into())
                .spawn(move || slow.run(&stopping, first_tx))
                .map_err(|e| log::error!("cannot start the scanner thread: {e}; no scans, no other namespaces"))
                .ok()
        });
        // The first snapshot is complete (it is what /-/ready announces): it waits for the
        // slow lane's first round (discovery, sysctls, scans), within reason.
        if first_rx.recv_timeout(FIRST_ROUND_WAIT).is_err() && scanner.is_some() {
            log::warn!("the slow lane's first round took over {FIRST_ROUND_WAIT:?}; serving without it until it ends");
        }
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
            if stop.sleep_until(next) {
                break;
            }
        }
        stopping.store(true, Ordering::Relaxed);
        // The scanner checks the flag every second; a scan stuck in the kernel must not
        // hold the exit (main does not wait for this thread either).
        drop(scanner);
    }
}

impl SlowLane {
    /// Runs a round whenever something is due: the next scan, discovery or settings
    /// read on the lane's clock, or a source's evidence (the fast lane wakes this
    /// thread). In between it sleeps, up to [`SLOW_MAX_SLEEP`] ticks: an idle exporter
    /// pays mostly for wake-ups.
    fn run(mut self, stopping: &AtomicBool, first: Sender<()>) {
        self.wake.register();
        // The lane's clock is the time since it started, in ticks: a round woken early
        // by evidence falls in the window of the round before it, where whatever ran on
        // its cadence does not run again (the sources' windows, `slot::window`).
        let start = Instant::now();
        let mut first = Some(first);
        while !stopping.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.lane.ticks =
                u64::try_from(now.duration_since(start).as_nanos() / SLOW_TICK.as_nanos()).unwrap_or(u64::MAX);
            self.step(now);
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            // The round left the clock at the next tick; sleep past the ticks with
            // nothing due to the start of the first that has something.
            let next = start + SLOW_TICK * u32::try_from(self.lane.ticks + self.idle).unwrap_or(u32::MAX);
            self.wake.sleep_until(next, stopping);
        }
    }

    /// Whether discovery runs at tick `t`: once in each window of its cadence.
    fn discovery_due(&self, t: u64) -> bool {
        self.discovery_window != Some(slot::window(t, 0, self.discovery_every))
    }

    /// How many ticks from the lane's next one have nothing due (at most
    /// [`SLOW_MAX_SLEEP`] - 1).
    fn idle_ticks(&self) -> u64 {
        if self.owners.wanted() {
            return 0;
        }
        let base = self.lane.ticks;
        (0..SLOW_MAX_SLEEP - 1)
            .find(|k| {
                let t = base.wrapping_add(*k);
                self.discovery_due(t) || self.lane.due_at(t)
            })
            .unwrap_or(SLOW_MAX_SLEEP - 1)
    }

    /// One round: discovery when due, every due scan, and the lane's output published
    /// for the fast lane to merge.
    pub fn step(&mut self, now: Instant) {
        // A breakdown that found a source without an owner asks for the namespaces
        // and addresses now, not at the next discovery (at most every OWNERS_ASKED).
        let asked = self.owners.take_wanted()
            && self
                .owners_asked
                .is_none_or(|at| now.saturating_duration_since(at) >= OWNERS_ASKED);
        if self.discovery_due(self.lane.ticks) || asked {
            self.discovery_window = Some(slot::window(self.lane.ticks, 0, self.discovery_every));
            self.guarded("discovery", Self::discover);
            if asked {
                self.owners_asked = Some(now);
                self.guarded("address_owners", Self::open_missing_addresses);
            }
            self.guarded("address_owners", Self::refresh_owners);
        }
        // Each source's panic is caught in its slot; this catches the rest of a round
        // (a namespace's settings), after which the next round goes on.
        self.guarded("slow_lane", |s| s.lane.run(now));
        if Arc::get_mut(&mut self.spare).is_none() {
            // The fast lane still reads it: let it keep it.
            self.spare = Arc::new(Snapshot::new());
        }
        self.idle = self.idle_ticks();
        let next_due = Instant::now() + SLOW_TICK * u32::try_from(self.idle + 1).unwrap_or(1);
        if let Some(out) = Arc::get_mut(&mut self.spare) {
            out.clear();
            self.lane.append(out);
            self.lane.emit_status(out);
            if let Some(d) = &self.discovery {
                out.push(&metrics::NETNS_SAMPLED, &[], self.lane.others.len() as f64);
                out.push(&metrics::NETNS_OMITTED, &[], d.omitted as f64);
                out.push(&metrics::NETNS_DISCOVERY_DURATION, &[], d.duration.as_secs_f64());
            }
            // `/-/healthy` holds the lane to its next due round.
            out.taken = Some(next_due);
        }
        // Published; what was published before becomes the spare.
        std::mem::swap(&mut self.spare, &mut *lock(&self.out));
    }

    /// Runs one step of a round, catching a panic: counted, logged, and the lane goes
    /// on with its next step (a visit that panics has already brought the thread home).
    fn guarded(&mut self, what: &'static str, f: impl FnOnce(&mut Self)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            record_panic(what);
        }
    }

    /// Brings the tracked namespaces in line with discovery, on this lane and the fast
    /// one: new ones get their sources (opened lazily, inside the namespace), gone or
    /// no longer chosen ones are dropped with their files and sockets.
    fn discover(&mut self) {
        fault::point("discovery");
        let Some(d) = self.discovery.as_mut() else { return };
        if !self.lane.home.as_mut().is_some_and(Home::at_home) {
            return;
        }
        let targets = match d.run(&self.lane.others) {
            Ok(t) => {
                self.failing = false;
                t
            }
            Err(Failure::NoDescriptors(e)) => {
                // Let go of every other namespace, so that the own sources and the
                // server have descriptors again; the next discovery takes back what
                // the budget allows.
                log::warn!("namespace discovery: out of descriptors ({e}); releasing every other namespace");
                let keys: Vec<NsKey> = self.lane.others.keys().copied().collect();
                for key in keys {
                    self.drop_namespace(key);
                }
                return;
            }
            Err(Failure::Other(e)) => {
                if !self.failing {
                    log::warn!("namespace discovery: {e}");
                    self.failing = true;
                }
                return;
            }
        };
        let wanted: BTreeMap<NsKey, &Target> = targets.iter().map(|t| (t.key, t)).collect();
        let gone: Vec<NsKey> = self
            .lane
            .others
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            self.drop_namespace(key);
        }
        for t in targets {
            match self.lane.others.get_mut(&t.key) {
                Some(g) if g.labels != t.labels => {
                    g.labels.clone_from(&t.labels);
                    if self.breakdown {
                        g.owner = Some(Arc::new(t.owner.clone()));
                    }
                    let _ = self.changes.send(Change::Relabel {
                        key: t.key,
                        labels: t.labels,
                    });
                }
                Some(_) => {}
                None => self.add_namespace(t),
            }
        }
    }

    /// Opens the address socket of every namespace that has none yet (a namespace
    /// just discovered opens it at its first settings read otherwise).
    fn open_missing_addresses(&mut self) {
        if !self.breakdown {
            return;
        }
        self.lane.own.open_addresses();
        let Some(home) = self.lane.home.as_mut() else { return };
        for (key, g) in &mut self.lane.others {
            if g.owner.is_none() || g.addresses.is_some() {
                continue;
            }
            if let Some(ns) = g.ns.clone() {
                let _ = home.visit(&ns, *key, || g.open_addresses());
            }
        }
    }

    /// Reads every namespace's addresses (through sockets opened inside them; no
    /// entering) into the node's owner map for the conntrack breakdown.
    fn refresh_owners(&mut self) {
        if !self.breakdown {
            return;
        }
        let mut all = Vec::new();
        let mut buf = Vec::new();
        for g in std::iter::once(&mut self.lane.own).chain(self.lane.others.values_mut()) {
            let (Some(owner), Some(socket)) = (&g.owner, g.addresses.as_mut()) else {
                continue;
            };
            match socket.read(&mut buf) {
                Ok(()) => all.extend(buf.drain(..).map(|a| (a, Arc::clone(owner)))),
                Err(e) => {
                    log::debug!("namespace {}: address dump: {e}; reopening at the next visit", g.labels);
                    g.addresses = None;
                }
            }
        }
        self.owners.replace(all);
    }

    fn add_namespace(&mut self, t: Target) {
        let found = netns::Found {
            pid: None,
            path: t.path.clone(),
        };
        let ns = match netns::open(&found, t.key) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                log::debug!("namespace {}: cannot open {}: {e}", t.key.1, t.path.display());
                return;
            }
        };
        let ctx = Arc::new(NsContext::shared(&self.owners, &self.wake, &self.cfg, Some(t.key)));
        let group = Group {
            labels: t.labels.clone(),
            phase: t.key.1,
            slots: self.builder.slow_slots(false, &ctx),
            ns: Some(Arc::clone(&ns)),
            ctx: Arc::clone(&ctx),
            settings: self.builder.settings(false),
            settings_window: None,
            owner: self.breakdown.then(|| Arc::new(t.owner.clone())),
            addresses: None,
        };
        self.lane.others.insert(t.key, group);
        let _ = self.changes.send(Change::Add {
            key: t.key,
            labels: t.labels,
            ns,
            ctx,
        });
    }

    fn drop_namespace(&mut self, key: NsKey) {
        self.lane.remove(&key);
        let _ = self.changes.send(Change::Remove(key));
    }
}

#[cfg(test)]
mod tests {
    //! The lanes' namespace switching against the real kernel, with failures injected
    //! through [`Home::switch`]. Needs root (the suite runs as root).
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;
    use std::sync::atomic::AtomicU64;

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

    fn switch(mode: &Arc<AtomicU64>) -> home::Switch {
        let own_ino = netns::key_of(std::path::Path::new("/proc/thread-self/ns/net"))
            .unwrap()
            .1;
        let mode = Arc::clone(mode);
        Box::new(move |f: &File| {
            let ino = f.metadata()?.ino();
            match mode.load(Ordering::SeqCst) {
                FAIL_RETURN if ino == own_ino => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
                m if m == ino => Err(std::io::Error::from_raw_os_error(libc::EPERM)),
                _ => crate::sys::setns_net(f),
            }
        })
    }

    /// A sampler of sockstat (fast lane) and sysctl (slow lane, whose settings are read
    /// inside each namespace), discovering and sampling every namespace on every step.
    fn sampler(mode: &Arc<AtomicU64>) -> (Sampler, Published) {
        let cfg = Config {
            sources: vec!["sockstat", "sysctl"],
            netns_interval: Duration::from_secs(1),
            netns_sample_interval: Config::default().sample_interval,
            ..Config::default()
        };
        let (mut s, rx) = Sampler::from_config(&cfg);
        s.fast.home.as_mut().expect("the fast lane's home").switch = switch(mode);
        let slow = s.slow.as_mut().expect("the slow lane");
        slow.lane.home.as_mut().expect("the slow lane's home").switch = switch(mode);
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
        discovery::netns_label(key, init)
            .trim_start_matches("netns=\"")
            .trim_end_matches('"')
            .to_string()
    }

    #[test]
    fn a_failed_return_home_serves_nothing_under_the_own_label_until_it_succeeds() {
        let (a, b) = (TestNs::new("home-a"), TestNs::new("home-b"));
        let own = own_label();
        let own_key = netns::key_of(std::path::Path::new("/proc/thread-self/ns/net")).unwrap();
        let mode = Arc::new(AtomicU64::new(REAL));
        let (mut s, rx) = sampler(&mode);
        s.step_all();
        assert!(serves(&rx, &own) && serves(&rx, &a.ino().to_string()) && serves(&rx, &b.ino().to_string()));

        // Steady state needs no entering. A new namespace does (its handles are opened
        // inside it), and the return from it fails: the thread stays there.
        mode.store(FAIL_RETURN, Ordering::SeqCst);
        let c = TestNs::new("home-c");
        // This step finds the namespace, and both lanes fail to come back from it (what
        // they sampled before that was sampled at home).
        s.step_all();
        for _ in 0..3 {
            s.step_all();
            assert!(!serves(&rx, &own), "a series under the own label while displaced");
            let snap = rx.borrow().clone().unwrap();
            assert_eq!(snap.value("netpressure_source_up", r#"source="sockstat""#), Some(0.0));
        }
        // The thread really is elsewhere: nothing above was read from the wrong namespace.
        assert_ne!(
            netns::key_of(std::path::Path::new("/proc/thread-self/ns/net"))
                .unwrap()
                .1,
            own_key.1
        );

        mode.store(REAL, Ordering::SeqCst);
        s.step_all();
        s.step_all();
        for ns in [&a, &b, &c] {
            assert!(serves(&rx, &ns.ino().to_string()));
        }
        assert!(serves(&rx, &own));
        assert_eq!(own_label(), own);
    }

    #[test]
    fn eperm_on_one_namespace_leaves_the_others_sampled() {
        let (a, b) = (TestNs::new("eperm-a"), TestNs::new("eperm-b"));
        let own = own_label();
        let mode = Arc::new(AtomicU64::new(a.ino()));
        let (mut s, rx) = sampler(&mode);
        for _ in 0..3 {
            s.step_all();
            assert!(serves(&rx, &own) && serves(&rx, &b.ino().to_string()));
            assert!(!serves(&rx, &a.ino().to_string()));
        }
        assert!(s.entries.failed.load(Ordering::SeqCst) >= 3);
        // Allowed again: found and sampled at the next discovery.
        mode.store(REAL, Ordering::SeqCst);
        s.step_all();
        s.step_all();
        assert!(serves(&rx, &a.ino().to_string()) && serves(&rx, &b.ino().to_string()));
    }

    #[test]
    fn a_panic_in_either_lane_is_counted_the_thread_goes_home_and_sampling_goes_on() {
        let a = TestNs::new("panic-a");
        let own_key = netns::key_of(std::path::Path::new("/proc/thread-self/ns/net")).unwrap();
        let mode = Arc::new(AtomicU64::new(REAL));
        let (mut s, rx) = sampler(&mode);
        // step_all runs both lanes on this thread, where the fault is set: the first
        // step finds the namespace and each lane's visit to it panics.
        fault::AT.with(|f| f.set(Some("visit")));
        s.step_all();
        assert_eq!(
            netns::key_of(std::path::Path::new("/proc/thread-self/ns/net"))
                .unwrap()
                .1,
            own_key.1,
            "the panic left the thread in another namespace"
        );
        fault::AT.with(|f| f.set(Some("discovery")));
        s.step_all();
        fault::AT.with(|f| f.set(None));
        s.step_all();
        s.step_all();
        let snap = rx.borrow().clone().unwrap();
        for what in ["slow_lane", "fast_lane", "discovery"] {
            let n = snap.value("netpressure_source_panics_total", &format!("source=\"{what}\""));
            assert!(n >= Some(1.0), "{what}: {n:?}");
        }
        // Both lanes went on: the namespace is sampled, the slow lane's rounds are fresh.
        assert!(serves(&rx, &a.ino().to_string()) && serves(&rx, &own_label()));
        assert!(snap.slow_round.unwrap().elapsed() < Duration::from_secs(2));
    }
}
