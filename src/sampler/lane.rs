//! A lane: the sources one thread runs, in the exporter's own namespace and in every
//! other namespace it tracks, each at its cadence, with each source's last output
//! served between its runs.
//!
//! Another namespace's sources are run without entering it: their sockets and files,
//! opened inside it, stay bound to it. Only a source that must open a handle (on its
//! first run, or after an error closed one) reports so, and the lane then enters the
//! namespace, runs it again there and returns; and the sysctls, which are not kept
//! open, are read from inside at their scan cadence.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::{self, Desc};
use crate::netlink::route::Addresses;
use crate::netns::{self, NsKey};
use crate::sampler::home::{Home, DISPLACED};
use crate::sampler::slot::{window, Run, Slot};
use crate::snapshot::Snapshot;
use crate::source::breakdown::Owner;
use crate::source::settings::SettingsReader;
use crate::source::NsContext;

/// The sources of one network namespace on one lane.
pub struct Group {
    /// Rendered labels: `netns="..."` and, for a pod, `namespace`/`pod`.
    pub labels: String,
    /// Ticks are offset by this much, so that namespaces do not all run at once.
    pub phase: u64,
    pub slots: Vec<Slot>,
    /// The namespace, to enter (`None`: the exporter's own, which the thread is in).
    /// One descriptor, shared by the namespace's groups on both lanes.
    pub ns: Option<Arc<File>>,
    pub ctx: Arc<NsContext>,
    /// The namespace's sysctls, read every this many ticks into `ctx` (the slow lane).
    pub settings: Option<(SettingsReader, u64)>,
    /// The window of `settings`' cadence in which they were last read.
    pub settings_window: Option<u64>,
    /// Where the conntrack breakdown names the pods behind addresses (the slow lane,
    /// when it is on): the namespace as an owner, and its rtnetlink socket, opened
    /// inside with the sysctls and read from outside at each discovery.
    pub owner: Option<Arc<Owner>>,
    pub addresses: Option<Addresses>,
    /// Every slot's last output with the group's labels, rendered when a slot ran or
    /// the labels changed ([`Group::render`]), and copied as it is into each tick's
    /// snapshot: another namespace's series change once per `--netns.sample-interval`,
    /// and rendering their labels on every tick was 8 % of the exporter's CPU at 250
    /// pods (`perf`).
    pub rendered: Snapshot,
}

impl Group {
    fn settings_due(&self, ticks: u64) -> bool {
        match &self.settings {
            Some((_, every)) => {
                self.settings_window != Some(window(ticks, self.phase, *every))
                    || !lock(&self.ctx.from_slow.settings).read
            }
            None => false,
        }
    }

    fn claim_settings(&mut self, ticks: u64) {
        if let Some((_, every)) = &self.settings {
            self.settings_window = Some(window(ticks, self.phase, *every));
        }
    }

    /// Opens the rtnetlink socket if the group wants one (the thread is in the
    /// namespace).
    pub(super) fn open_addresses(&mut self) {
        if self.owner.is_some() && self.addresses.is_none() {
            match Addresses::open() {
                Ok(a) => self.addresses = Some(a),
                Err(e) => log::debug!("namespace {}: address socket: {e}", self.labels),
            }
        }
    }

    /// Reads the sysctls into the context (the thread is in the namespace).
    fn read_settings(&mut self) {
        super::fault::point("settings");
        let Some((reader, _)) = self.settings.as_mut() else {
            return;
        };
        let result = reader.read();
        let mut err = lock(&self.ctx.from_slow.settings_error);
        match result {
            Ok(s) => {
                *lock(&self.ctx.from_slow.settings) = s;
                *err = None;
            }
            Err(e) => *err = Some(e.to_string()),
        }
    }

    /// Renders every slot's last output, labelled where the source is namespaced.
    pub fn render(&mut self) {
        self.rendered.clear();
        for slot in &self.slots {
            if slot.namespaced {
                self.rendered.extend_labelled(&slot.cache, &self.labels);
            } else {
                self.rendered.extend_from(&slot.cache);
            }
        }
    }

    /// Gives the group new labels (a pod's, found after its namespace).
    pub fn relabel(&mut self, labels: &str) {
        labels.clone_into(&mut self.labels);
        self.render();
    }

    /// Appends the rendered output.
    pub fn append(&self, snap: &mut Snapshot) {
        snap.extend_from(&self.rendered);
    }
}

use crate::sync::lock;

/// Which families are served for namespaces other than the exporter's own.
pub type Families = Arc<dyn Fn(&'static Desc) -> bool + Send + Sync>;

pub struct Lane {
    pub own: Group,
    pub others: BTreeMap<NsKey, Group>,
    /// Present when other namespaces are sampled.
    pub home: Option<Home>,
    pub ticks: u64,
    families: Families,
    /// Errors of sources in namespaces no longer tracked, so that the aggregate
    /// counter never goes down.
    retired_errors: HashMap<&'static str, u64>,
    /// Rounds of other namespaces' due sources, for `netpressure_netns_samples_total`.
    pub rounds: u64,
    /// This lane runs the node pass before the first other namespace due in a tick
    /// (the fast lane, whose sources read it).
    pub runs_pass: bool,
}

impl Lane {
    pub fn new(own: Group, home: Option<Home>, families: Families) -> Self {
        Self {
            own,
            others: BTreeMap::new(),
            home,
            ticks: 0,
            families,
            retired_errors: HashMap::new(),
            rounds: 0,
            runs_pass: false,
        }
    }

    /// Runs every due source, in the own namespace and the others.
    pub fn run(&mut self, now: Instant) {
        let ticks = self.ticks;
        self.ticks = self.ticks.wrapping_add(1);
        let displaced = self.home.as_mut().is_some_and(|h| !h.at_home());
        let own = &mut self.own;
        if own.settings_due(ticks) && !displaced {
            own.claim_settings(ticks);
            own.read_settings();
            own.open_addresses();
        }
        let mut ran = false;
        for slot in &mut own.slots {
            if displaced && slot.namespaced {
                slot.fail(DISPLACED);
                ran = true;
            } else if slot.due(ticks, own.phase) {
                slot.claim(ticks, own.phase);
                slot.run(now);
                ran = true;
            }
        }
        if ran {
            own.render();
        }
        if displaced {
            return;
        }
        let Some(home) = self.home.as_mut() else { return };
        let mut pass_pending = self.runs_pass;
        for (key, g) in &mut self.others {
            if run_other(*key, g, home, ticks, now, &self.families, &mut pass_pending) {
                self.rounds += 1;
            }
        }
    }

    /// Whether anything runs at tick `t`: a namespace's settings or a source due.
    pub fn due_at(&self, t: u64) -> bool {
        std::iter::once(&self.own)
            .chain(self.others.values())
            .any(|g| g.settings_due(t) || g.slots.iter().any(|s| s.due(t, g.phase)))
    }

    /// Appends every group's last output.
    pub fn append(&self, snap: &mut Snapshot) {
        self.own.append(snap);
        for g in self.others.values() {
            g.append(snap);
        }
    }

    /// Stops sampling a namespace; its sources' errors stay counted.
    pub fn remove(&mut self, key: &NsKey) {
        if let Some(g) = self.others.remove(key) {
            for slot in &g.slots {
                *self.retired_errors.entry(slot.source.name()).or_default() += slot.status.errors;
            }
        }
    }

    /// The own namespace's per-source health, and the other namespaces' in aggregate
    /// (it would multiply by the number of pods otherwise).
    pub fn emit_status(&self, snap: &mut Snapshot) {
        for slot in &self.own.slots {
            slot.status.emit(slot.source.name(), snap);
            slot.source.visit_status(&mut |sub, status| status.emit(sub, snap));
        }
        if self.home.is_none() {
            return;
        }
        for own in self.own.slots.iter().filter(|s| s.namespaced) {
            let name = own.source.name();
            let slots = self
                .others
                .values()
                .flat_map(|g| &g.slots)
                .filter(|s| s.source.name() == name);
            let (mut down, mut errors) = (0u64, self.retired_errors.get(name).copied().unwrap_or(0));
            for s in slots {
                down += u64::from(s.status.samples > 0 && !s.status.up);
                errors += s.status.errors;
            }
            snap.push(&metrics::NETNS_SOURCE_DOWN, &[("source", name)], down as f64);
            snap.push(&metrics::NETNS_SOURCE_ERRORS, &[("source", name)], errors as f64);
        }
    }
}

/// Runs the due sources of another namespace. When its sysctls are due, everything
/// due runs inside it, after them (the sources read their settings). Otherwise the
/// sources run without entering it, and only those that must open a handle run again
/// inside.
/// With `pass_pending`, the node pass runs first if anything is due (and is then no
/// longer pending for the tick's other namespaces).
/// Whether anything was due.
fn run_other(
    key: NsKey,
    g: &mut Group,
    home: &mut Home,
    ticks: u64,
    now: Instant,
    families: &Families,
    pass_pending: &mut bool,
) -> bool {
    let mut ran: u64 = 0;
    for (i, slot) in g.slots.iter_mut().enumerate().take(64) {
        if slot.due(ticks, g.phase) {
            slot.claim(ticks, g.phase);
            ran |= 1 << i;
        }
    }
    if ran != 0 && *pass_pending {
        *pass_pending = false;
        g.ctx.node.pass.refresh(now);
    }
    let settings_due = g.settings_due(ticks);
    if settings_due {
        g.claim_settings(ticks);
    }
    let need = if settings_due {
        ran
    } else {
        let mut need = 0u64;
        netns::without_entering(|| {
            for (i, slot) in g.slots.iter_mut().enumerate() {
                if ran & (1 << i) != 0 && slot.run(now) == Run::NeedsEntering {
                    need |= 1 << i;
                }
            }
        });
        need
    };
    if need != 0 || settings_due {
        // A handle of its own for the visit, so that the closure may borrow the group
        // (and a panic in the visit leaves the group its namespace).
        let entered = match g.ns.clone() {
            Some(ns) => {
                let r = home.visit(ns.as_ref(), key, || {
                    super::fault::point("visit");
                    if settings_due {
                        g.read_settings();
                        g.open_addresses();
                    }
                    for (i, slot) in g.slots.iter_mut().enumerate() {
                        if need & (1 << i) != 0 {
                            slot.run(now);
                        }
                    }
                });
                r
            }
            None => None,
        };
        if entered.is_none() {
            for (i, slot) in g.slots.iter_mut().enumerate() {
                if need & (1 << i) != 0 {
                    slot.fail("cannot enter the network namespace");
                }
            }
        }
    }
    // Only the families chosen for other namespaces are kept (the series budget).
    for (i, slot) in g.slots.iter_mut().enumerate() {
        if ran & (1 << i) != 0 {
            slot.cache.retain(|d| families(d));
        }
    }
    if ran != 0 {
        g.render();
    }
    ran != 0
}
