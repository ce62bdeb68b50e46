//! The fast lane ([`Sampler`]): the pressure gauges every tick, the peaks, and one
//! published snapshot per tick.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::discovery::Discovery;
use super::home::{self, Home};
use super::lane::{Group, Lane};
use super::slow::SlowLane;
use super::stop::StopReceiver;
use super::wiring::{families, own_namespace, Builder};
use super::{registry, Published};
use crate::cadence::FIRST_ROUND_WAIT;
use crate::config::Config;
use crate::metrics;
use crate::peak::Peaks;
use crate::snapshot::Snapshot;
use crate::source::breakdown::Owner;
use crate::source::pass::NodePass;
use crate::source::{Node, NsContext};
use crate::sync::lock;

pub struct Sampler {
    pub(super) fast: Lane,
    /// Until [`Sampler::run`] moves it to its thread (tests and benches step it here).
    pub(super) slow: Option<SlowLane>,
    /// There is a slow lane (its rounds are watched by `/-/healthy`).
    has_slow: bool,
    slow_out: Arc<Mutex<Arc<Snapshot>>>,
    /// The namespaces the slow lane tracks, and the registry this lane last followed.
    registry: Arc<registry::Latest>,
    followed: Arc<registry::Registry>,
    builder: Builder,
    peaks: Peaks,
    interval: Duration,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    spare: Arc<Snapshot>,
    overruns: u64,
    durations: metrics::Histogram,
    pub(super) entries: Arc<home::Entries>,
    http: Option<Arc<metrics::HttpStats>>,
    /// The node pass (when other namespaces are sampled), run before their sources when
    /// they are due; with it loaded they all run in the same tick (phase 0), so one pass
    /// serves them all.
    pass: Option<Arc<NodePass>>,
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
        let pass = match (&homes, cfg.node_pass) {
            (Some((key, _, _)), true) => Some(Arc::new(NodePass::new(cfg, key.1))),
            (Some(_), false) => Some(Arc::new(NodePass::default())),
            (None, _) => None,
        };
        let node = Arc::new(Node {
            owners,
            pass: pass.clone().unwrap_or_default(),
            ..Node::default()
        });
        let ctx = Arc::new(NsContext::shared(&node, cfg, own_key, crate::cadence::Scope::Own));
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
            rendered: Snapshot::new(),
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
        let registry = Arc::new(registry::Latest::default());
        // Before the slow lane's first round, its start stands for its last round.
        let mut before_first = Snapshot::new();
        before_first.taken = Some(Instant::now());
        let slow_out = Arc::new(Mutex::new(Arc::new(before_first)));
        let slow = SlowLane::new(
            slow_lane,
            discovery,
            Arc::clone(&registry),
            Arc::clone(&slow_out),
            builder.clone(),
            node,
            breakdown,
            cfg,
        );
        let mut fast = fast;
        fast.runs_pass = pass.is_some();
        let sampler = Self {
            fast,
            slow: Some(slow),
            has_slow: true,
            slow_out,
            followed: registry.get(),
            registry,
            builder,
            peaks: Peaks::new(cfg.peak_window),
            interval: cfg.sample_interval,
            tx,
            spare: Arc::new(Snapshot::new()),
            overruns: 0,
            durations: metrics::Histogram::new(&metrics::SAMPLE_DURATION_BUCKETS),
            entries,
            http: None,
            pass,
        };
        (sampler, rx)
    }

    /// Serves the HTTP server's counts with the self-metrics.
    pub fn with_http_stats(mut self, stats: Arc<metrics::HttpStats>) -> Self {
        self.http = Some(stats);
        self
    }

    /// Follows the namespaces the slow lane tracks, when it has published a change.
    fn follow_registry(&mut self) {
        let latest = self.registry.get();
        if Arc::ptr_eq(&latest, &self.followed) {
            return;
        }
        let (gone, new, relabelled) = registry::diff(&self.fast.others, &latest, |g| (&g.ctx, g.labels.as_str()));
        for key in gone {
            self.fast.remove(&key);
        }
        for (key, t) in new {
            // The pass is loaded here, when the first other namespace comes (a node
            // without pods never pays for it).
            let aligned = self.pass.as_ref().is_some_and(|p| p.loaded());
            let group = Group {
                labels: t.labels.clone(),
                phase: if aligned { 0 } else { key.1 },
                slots: self.builder.fast_slots(false, &t.ctx),
                ns: Some(Arc::clone(&t.ns)),
                ctx: Arc::clone(&t.ctx),
                settings: None,
                settings_window: None,
                owner: None,
                addresses: None,
                rendered: Snapshot::new(),
            };
            self.fast.others.insert(key, group);
        }
        for (key, labels) in relabelled {
            if let Some(g) = self.fast.others.get_mut(&key) {
                g.relabel(labels);
            }
        }
        self.followed = latest;
    }

    /// Takes one sample of the fast lane, merges the slow lane's latest output, and
    /// publishes the snapshot.
    pub fn tick(&mut self) {
        let start = Instant::now();
        self.follow_registry();
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
            self.builder.panics.record("fast_lane");
        }
        self.fast.append(snap);
        let slow = Arc::clone(&lock(&self.slow_out));
        snap.extend_from(&slow);
        snap.slow_round = if self.has_slow { slow.taken } else { None };
        drop(slow);
        self.builder.panics.emit(snap);
        self.peaks.apply(snap, start);
        self.fast.emit_status(snap);
        snap.push(&metrics::SAMPLER_OVERRUNS, &[], self.overruns as f64);
        if let Some(http) = &self.http {
            http.emit(snap);
        }
        snap.push(&metrics::SAMPLE_INTERVAL, &[], self.interval.as_secs_f64());
        snap.push(&metrics::PEAK_WINDOW, &[], self.peaks.window().as_secs_f64());
        snap.push(&metrics::LAST_SAMPLE, &[], snap.taken_at);
        if let Some(pass) = &self.pass {
            pass.emit(snap);
        }
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
        stop.register();
        let stopping = Arc::new(AtomicBool::new(false));
        let (first_tx, first_rx) = mpsc::channel();
        // One sample of the fast lane's sources before the slow lane's first round, so
        // that the evidence its scans go by (sockets, the table's fill) is there: without
        // it the first round would walk the hash for nothing, and the series that say
        // so would change a second after start.
        if catch_unwind(AssertUnwindSafe(|| self.fast.run(Instant::now()))).is_err() {
            self.builder.panics.record("fast_lane");
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
