//! Packets the kernel dropped, per namespace and drop reason: `netpressure_packet_drops_total`.
//!
//! One BPF program for the node ([`crate::bpf::DropCounter`]) counts every drop on
//! `skb:kfree_skb` in a per-CPU map keyed by (namespace cookie, inode, reason). Each
//! namespace's instance of this source learns its namespace's cookie once
//! (`SO_NETNS_COOKIE`) and serves the keys of that cookie from the last read of the map,
//! which is read once a second for all of them, on the fast lane's tick that first needs
//! it: no thread and no wake-up are added to an idle exporter's.
//!
//! The cookie, not the inode, decides whose drops a key holds: the kernel gives a freed
//! namespace's inode to the next one, and a pod that died before discovery found it
//! would otherwise hand its drops to the next pod's labels. Keys of a namespace that is
//! gone are deleted at the next read that can tell: its inode now names a sampled
//! namespace with another cookie, or a discovery that started after the key was first
//! seen did not find the inode. The rest not sampled (a namespace past `--netns.max`)
//! go after `UNSAMPLED_GRACE`.
//!
//! The program is loaded on the first sample and never again: without BTF, on a kernel
//! before 5.17, without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), or with BPF locked
//! down, the source is down with the kernel's answer, and nothing else changes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bpf::{BpfError, DropCounter, DropKey, MAX_ENTRIES};
use crate::btf::{DropReasons as ReasonNames, REASON_ENUM, SUBSYS_ENUM};
use crate::config::Config;
use crate::metrics;
use crate::netlink::NetlinkError;
use crate::snapshot::Snapshot;
use crate::source::{NsContext, Source, SourceError};

/// How long the map keeps the keys of a namespace that is neither sampled nor known to
/// be gone (one not yet discovered, or past `--netns.max`) before they are deleted.
/// Longer than a discovery interval, so that a new pod's first drops are still there
/// when it is found.
const UNSAMPLED_GRACE: Duration = Duration::from_secs(30);

/// The node's one drop counter, shared by every namespace's instance of one sampler
/// (through [`Node::drops`](crate::source::Node::drops)).
#[derive(Default)]
pub struct NodeDrops(Mutex<Shared>);

#[derive(Default)]
struct Shared {
    state: State,
    /// The namespaces an instance serves: (cookie, inode, how many instances).
    sampled: Vec<(u64, u32, usize)>,
    found: Option<Found>,
}

/// The inodes the last discovery found, and when it started.
type Found = (Vec<u32>, Instant);

/// Records what a discovery found (every namespace on the node, sampled or not) and when
/// it started: keys of an inode it did not find, seen before it started, are of a
/// namespace that is gone.
impl NodeDrops {
    pub fn note_found(&self, inodes: impl Iterator<Item = u64>, started: Instant) {
        let mut g = crate::sync::lock(&self.0);
        let list = inodes.filter_map(|i| u32::try_from(i).ok()).collect();
        g.found = Some((list, started));
    }
}

#[derive(Default)]
enum State {
    #[default]
    NotLoaded,
    /// Why not, and whether the kernel lacks the feature (rather than refusing it).
    Down(String, bool),
    Up(Box<Loaded>),
}

struct Loaded {
    counter: DropCounter,
    names: ReasonNames,
    /// Label values by reason, filled as reasons are first seen.
    labels: Vec<(u32, String)>,
    /// (key, count) of the last read, sorted by key: a namespace's keys are one run.
    entries: Vec<(DropKey, u64)>,
    full: u64,
    read_at: Option<Instant>,
    /// Cookies in the map that no instance serves, with when each was first seen so.
    unsampled: Vec<(u64, Instant)>,
}

impl Loaded {
    /// Loads the program; on failure, why, and whether the kernel lacks the feature.
    fn load(btf: &std::path::Path) -> Result<Self, (String, bool)> {
        // Read once, for the names and for the loader's relocations.
        let path = btf.display();
        let data = std::fs::read(btf)
            .map_err(|e| format!("reading {path}: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF)"))
            .and_then(|data| reason_names(&data, &path).map(|names| (data, names)));
        let (data, names) = data.map_err(|e| {
            // Once for the node, whichever namespace's instance tried first: the
            // source is off for good on this kernel, which an operator should hear of.
            log::info!("drop_reasons: off on this kernel: {e}");
            (e, true)
        })?;
        let counter = DropCounter::load(&data).map_err(|e| (e.to_string(), false))?;
        log::info!(
            "drop_reasons: counting drops on skb:kfree_skb ({} reasons in this kernel's BTF)",
            names.core_len()
        );
        Ok(Self {
            counter,
            names,
            labels: Vec::new(),
            entries: Vec::new(),
            full: 0,
            read_at: None,
            unsampled: Vec::new(),
        })
    }

    /// Reads the map unless the last read is younger than `max_age`.
    fn refresh(
        &mut self,
        max_age: Duration,
        sampled: &[(u64, u32, usize)],
        found: Option<&Found>,
    ) -> Result<(), BpfError> {
        let now = Instant::now();
        if self.read_at.is_some_and(|t| now.duration_since(t) < max_age) {
            return Ok(());
        }
        self.full = self.counter.read(&mut self.entries)?;
        self.read_at = Some(now);
        self.entries.sort_unstable_by_key(|e| e.0);
        for &(key, _) in &self.entries {
            if !self.labels.iter().any(|(r, _)| *r == key.reason) {
                self.labels.push((key.reason, self.names.name(key.reason)));
            }
        }
        self.forget_unsampled(now, sampled, found)
    }

    /// Deletes the keys of namespaces that are gone, and of those no instance has served
    /// for [`UNSAMPLED_GRACE`].
    fn forget_unsampled(
        &mut self,
        now: Instant,
        sampled: &[(u64, u32, usize)],
        found: Option<&Found>,
    ) -> Result<(), BpfError> {
        let is_sampled = |cookie: u64| cookie == 0 || sampled.iter().any(|(c, _, _)| *c == cookie);
        self.unsampled.retain(|(cookie, _)| !is_sampled(*cookie));
        for &(key, _) in &self.entries {
            if !is_sampled(key.cookie) && !self.unsampled.iter().any(|(c, _)| *c == key.cookie) {
                self.unsampled.push((key.cookie, now));
            }
        }
        let first_seen = |cookie: u64| self.unsampled.iter().find(|(c, _)| *c == cookie).map(|(_, t)| *t);
        let gone = |key: DropKey| {
            if is_sampled(key.cookie) {
                return false;
            }
            // Its inode names a sampled namespace now: inodes are unique among the living.
            let reused = sampled.iter().any(|(c, i, _)| *i == key.ino && *c != key.cookie);
            // A discovery that started after the key was first seen did not find it.
            let missed = found.is_some_and(|(inos, started)| {
                !inos.contains(&key.ino) && first_seen(key.cookie).is_some_and(|t| t <= *started)
            });
            let expired = first_seen(key.cookie).is_some_and(|t| now.duration_since(t) >= UNSAMPLED_GRACE);
            reused || missed || expired
        };
        let old: Vec<u64> = self
            .entries
            .iter()
            .filter(|(key, _)| gone(*key))
            .map(|(key, _)| key.cookie)
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        let removed = self.counter.forget(|key| old.contains(&key.cookie))?;
        log::debug!("drop_reasons: forgot {removed} keys of namespaces gone or no longer sampled");
        self.unsampled.retain(|(c, _)| !old.contains(c));
        self.entries.retain(|(key, _)| !old.contains(&key.cookie));
        Ok(())
    }

    /// The (reason, count) pairs of the namespace whose cookie is `cookie`.
    fn of(&self, cookie: u64) -> impl Iterator<Item = (&str, u64)> {
        let start = self.entries.partition_point(|e| e.0.cookie < cookie);
        self.entries[start..]
            .iter()
            .take_while(move |e| e.0.cookie == cookie)
            .filter(|e| e.1 > 0)
            .map(|&(key, n)| {
                let label = self
                    .labels
                    .iter()
                    .find(|(r, _)| *r == key.reason)
                    .map_or("unknown", |(_, l)| l.as_str());
                (label, n)
            })
    }
}

/// The reason names of the running kernel, from its BTF (`data`, read from `path`).
fn reason_names(data: &[u8], path: &dyn std::fmt::Display) -> Result<ReasonNames, String> {
    let found = crate::btf::enums(data, &[REASON_ENUM, SUBSYS_ENUM]).map_err(|e| format!("{path}: {e}"))?;
    let mut found = found.into_iter();
    let Some(reasons) = found.next().flatten() else {
        return Err(format!(
            "{path} has no enum {REASON_ENUM}: the kernel predates drop reasons (5.17)"
        ));
    };
    let subsystems = found.next().flatten().unwrap_or_default();
    Ok(ReasonNames::new(&reasons, &subsystems))
}

pub struct DropReasons {
    /// The namespace's inode; `None` where it cannot be known (nothing is served).
    ino: Option<u32>,
    /// Its cookie, learned on the first sample inside it (entering it if need be).
    cookie: Option<u64>,
    /// The exporter's own namespace: it also serves the node's unattributed drops and the
    /// map's health.
    own: bool,
    max_age: Duration,
    /// The kernel's BTF, under `--path.sysfs`.
    btf: std::path::PathBuf,
    node: std::sync::Arc<NodeDrops>,
}

impl DropReasons {
    pub fn new(cfg: &Config, ctx: &std::sync::Arc<NsContext>) -> Self {
        let key = ctx.netns.or_else(|| {
            if ctx.scope == crate::cadence::Scope::Other {
                None
            } else {
                crate::netns::key_of(std::path::Path::new("/proc/thread-self/ns/net")).ok()
            }
        });
        // A read this much younger than a second serves: every namespace due within the
        // second shares one read, whichever tick of it each falls on.
        let max_age = crate::cadence::Cadences::new(cfg).drop_map_max_age();
        Self {
            ino: key.and_then(|k| u32::try_from(k.1).ok()),
            cookie: None,
            own: ctx.scope == crate::cadence::Scope::Own,
            max_age,
            btf: cfg.roots.sysfs.join("kernel/btf/vmlinux"),
            node: std::sync::Arc::clone(&ctx.node.drops),
        }
    }

    /// Learns the namespace's cookie (the thread must be inside it) and registers it as
    /// sampled.
    fn learn_cookie(&mut self, g: &mut Shared) -> Result<Option<u64>, SourceError> {
        if let Some(c) = self.cookie {
            return Ok(Some(c));
        }
        let Some(ino) = self.ino else { return Ok(None) };
        if !crate::netns::may_open() {
            // A socket must be made inside: the lane enters and runs this again.
            return Err(NetlinkError::NotEntered { protocol: 0 }.into());
        }
        let cookie = crate::sys::netns_cookie().map_err(|source| SourceError::Io {
            what: "the namespace's cookie (SO_NETNS_COOKIE)".into(),
            source,
        })?;
        match g.sampled.iter_mut().find(|(c, _, _)| *c == cookie) {
            Some((_, _, n)) => *n += 1,
            None => g.sampled.push((cookie, ino, 1)),
        }
        self.cookie = Some(cookie);
        Ok(Some(cookie))
    }
}

impl Drop for DropReasons {
    fn drop(&mut self) {
        let Some(cookie) = self.cookie else { return };
        let mut g = crate::sync::lock(&self.node.0);
        if let Some(pos) = g.sampled.iter().position(|(c, _, _)| *c == cookie) {
            g.sampled[pos].2 -= 1;
            if g.sampled[pos].2 == 0 {
                g.sampled.swap_remove(pos);
                // Its keys go now: the namespace is no longer served.
                if let State::Up(l) = &mut g.state {
                    if let Err(e) = l.counter.forget(|key| key.cookie == cookie) {
                        log::debug!("drop_reasons: forgetting namespace {:?}: {e}", self.ino);
                    }
                    l.entries.retain(|(key, _)| key.cookie != cookie);
                }
            }
        }
    }
}

impl Source for DropReasons {
    fn name(&self) -> &'static str {
        "drop_reasons"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let node = std::sync::Arc::clone(&self.node);
        let mut g = crate::sync::lock(&node.0);
        let g = &mut *g;
        if matches!(g.state, State::NotLoaded) {
            g.state = match Loaded::load(&self.btf) {
                Ok(l) => State::Up(Box::new(l)),
                Err((e, absent)) => State::Down(e, absent),
            };
            // The load parsed the kernel's whole BTF (about 35 MB of heap on 6.18, all
            // freed): without this the allocator keeps some 18 MB of it resident.
            crate::sys::release_free_heap();
        }
        match &g.state {
            State::Up(_) => {}
            State::Down(e, true) => return Err(SourceError::Absent(e.clone())),
            State::Down(e, false) => return Err(crate::bpf::BpfError::Load(e.clone()).into()),
            State::NotLoaded => return Ok(()),
        }
        let cookie = self.learn_cookie(g)?;
        let State::Up(loaded) = &mut g.state else { return Ok(()) };
        loaded.refresh(self.max_age, &g.sampled, g.found.as_ref())?;
        if let Some(cookie) = cookie {
            for (reason, n) in loaded.of(cookie) {
                out.push(&metrics::PACKET_DROPS, &[("reason", reason)], n as f64);
            }
        }
        if self.own {
            for (reason, n) in loaded.of(0) {
                out.push(&metrics::PACKET_DROPS_UNATTRIBUTED, &[("reason", reason)], n as f64);
            }
            out.push(&metrics::DROP_MAP_FULL, &[], loaded.full as f64);
            out.push(&metrics::DROP_MAP_ENTRIES, &[], loaded.entries.len() as f64);
            out.push(&metrics::DROP_MAP_LIMIT, &[], f64::from(MAX_ENTRIES));
        }
        Ok(())
    }
}
