//! The slow lane ([`SlowLane`]): discovery, sysctls, and every scan.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::discovery::{Discovery, Failure, Target};
use super::home::Home;
use super::lane::{Group, Lane};
use super::panics::fault;
use super::registry::{self, Registry, Tracked};
use super::slot;
use super::wiring::Builder;
use crate::cadence::{Cadences, OWNERS_ASKED, SLOW_MAX_SLEEP, SLOW_TICK};
use crate::config::Config;
use crate::metrics;
use crate::netns::{self, NsKey};
use crate::snapshot::Snapshot;
use crate::source::{Node, NsContext};
use crate::sync::lock;

/// The slow lane: discovery, sysctls, and every scan.
pub struct SlowLane {
    pub(super) lane: Lane,
    discovery: Option<Discovery>,
    discovery_every: u64,
    /// The window of `discovery_every` ticks in which discovery last ran.
    discovery_window: Option<u64>,
    registry: Arc<registry::Latest>,
    out: Arc<Mutex<Arc<Snapshot>>>,
    /// The snapshot the next round fills: the one published two rounds ago, once the
    /// fast lane has let go of it (no allocation a round in the steady state).
    spare: Arc<Snapshot>,
    builder: Builder,
    /// Discovery could not list procfs, or ran out of descriptors (logged once).
    failing: bool,
    /// What every namespace's context shares: the address owners, refreshed after each
    /// discovery when `breakdown`; the wake the fast lane's sources ring when evidence
    /// turns; the drop counter, told what each discovery found.
    node: Arc<Node>,
    /// When a breakdown last brought the owners' refresh forward.
    owners_asked: Option<Instant>,
    breakdown: bool,
    cfg: Config,
    /// The ticks after the last round with nothing due ([`SlowLane::idle_ticks`]), as
    /// that round computed them for the next due round it published.
    idle: u64,
}

impl SlowLane {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        lane: Lane,
        discovery: Option<Discovery>,
        registry: Arc<registry::Latest>,
        out: Arc<Mutex<Arc<Snapshot>>>,
        builder: Builder,
        node: Arc<Node>,
        breakdown: bool,
        cfg: &Config,
    ) -> Self {
        Self {
            lane,
            discovery,
            discovery_every: Cadences::new(cfg).discovery_ticks(),
            discovery_window: None,
            registry,
            out,
            spare: Arc::new(Snapshot::new()),
            builder,
            failing: false,
            node,
            owners_asked: None,
            breakdown,
            cfg: cfg.clone(),
            idle: 0,
        }
    }

    /// Runs a round whenever something is due: the next scan, discovery or settings
    /// read on the lane's clock, or a source's evidence (the fast lane wakes this
    /// thread). In between it sleeps, up to [`SLOW_MAX_SLEEP`] ticks: an idle exporter
    /// pays mostly for wake-ups.
    pub(super) fn run(mut self, stopping: &AtomicBool, first: Sender<()>) {
        self.node.wake.register();
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
            self.node.wake.sleep_until(next, stopping);
        }
    }

    /// Whether discovery runs at tick `t`: once in each window of its cadence.
    fn discovery_due(&self, t: u64) -> bool {
        self.discovery_window != Some(slot::window(t, 0, self.discovery_every))
    }

    /// How many ticks from the lane's next one have nothing due (at most
    /// [`SLOW_MAX_SLEEP`] - 1).
    fn idle_ticks(&self) -> u64 {
        if self.node.owners.wanted() {
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
        let asked = self.node.owners.take_wanted()
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
            self.builder.panics.record(what);
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
        let started = Instant::now();
        let targets = match d.run(&self.lane.others) {
            Ok(t) => {
                self.failing = false;
                // The drop counter tells a gone namespace's keys by what was found.
                self.node.drops.note_found(d.found(), started);
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
                self.publish();
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
        let mut changed = !gone.is_empty();
        for key in gone {
            self.drop_namespace(key);
        }
        for t in targets {
            match self.lane.others.get_mut(&t.key) {
                Some(g) if g.labels != t.labels => {
                    g.relabel(&t.labels);
                    if self.breakdown {
                        g.owner = Some(Arc::new(t.owner.clone()));
                    }
                    changed = true;
                }
                Some(_) => {}
                None => changed |= self.add_namespace(t),
            }
        }
        if changed {
            self.publish();
        }
    }

    /// Publishes the namespaces this lane tracks for the fast lane.
    fn publish(&self) {
        let namespaces = self
            .lane
            .others
            .iter()
            .filter_map(|(key, g)| {
                let tracked = Tracked {
                    labels: g.labels.clone(),
                    ns: Arc::clone(g.ns.as_ref()?),
                    ctx: Arc::clone(&g.ctx),
                };
                Some((*key, Arc::new(tracked)))
            })
            .collect();
        self.registry.publish(Registry { namespaces });
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
        self.node.owners.replace(all);
    }

    /// Tracks a namespace discovery found; false if it could not be opened.
    fn add_namespace(&mut self, t: Target) -> bool {
        let found = netns::Found {
            pid: None,
            path: t.path.clone(),
        };
        let ns = match netns::open(&found, t.key) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                log::debug!("namespace {}: cannot open {}: {e}", t.key.1, t.path.display());
                return false;
            }
        };
        let ctx = Arc::new(NsContext::shared(
            &self.node,
            &self.cfg,
            Some(t.key),
            crate::cadence::Scope::Other,
        ));
        let group = Group {
            labels: t.labels,
            phase: t.key.1,
            slots: self.builder.slow_slots(false, &ctx),
            ns: Some(ns),
            ctx,
            settings: self.builder.settings(false),
            settings_window: None,
            owner: self.breakdown.then(|| Arc::new(t.owner.clone())),
            addresses: None,
            rendered: crate::snapshot::Snapshot::new(),
        };
        self.lane.others.insert(t.key, group);
        true
    }

    fn drop_namespace(&mut self, key: NsKey) {
        self.lane.remove(&key);
    }
}
