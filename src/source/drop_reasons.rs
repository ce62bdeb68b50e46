//! Packets the kernel dropped, per namespace and drop reason: `netpressure_packet_drops_total`.
//!
//! One BPF program for the node ([`crate::bpf::DropCounter`]) counts every drop on
//! `skb:kfree_skb` in a per-CPU map keyed by (namespace inode, reason). Each namespace's
//! instance of this source serves its own keys from the last read of the map, and the
//! map is read once a second for all of them, on the fast lane's tick that first needs
//! it: no thread and no wake-up are added to an idle exporter's.
//!
//! The program is loaded on the first sample and never again: without BTF, on a kernel
//! before 5.17, without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), or with BPF locked
//! down, the source is down with the kernel's answer, and nothing else changes.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::bpf::{BpfError, DropCounter, MAX_ENTRIES};
use crate::btf::{DropReasons as ReasonNames, REASON_ENUM, SUBSYS_ENUM};
use crate::config::Config;
use crate::metrics;
use crate::snapshot::Snapshot;
use crate::source::{NsContext, Source, SourceError};

/// How long the map keeps the keys of a namespace no instance samples (one not yet
/// discovered, or past `--netns.max`) before they are deleted: the kernel hands a freed
/// namespace's inode to the next one, which must not inherit its counts. Longer than a
/// discovery interval, so that a new pod's first drops are still there when it is found.
const UNSAMPLED_GRACE: Duration = Duration::from_secs(30);

/// How often the map is read (at most; every namespace's instance serves the last read).
pub const READ_EVERY: Duration = Duration::from_secs(1);

/// The node's one drop counter, shared by every namespace's instance.
static SHARED: Mutex<Shared> = Mutex::new(Shared {
    state: State::NotLoaded,
    sampled: Vec::new(),
});

struct Shared {
    state: State,
    /// Inodes of the namespaces an instance serves, with how many instances serve each.
    sampled: Vec<(u32, usize)>,
}

enum State {
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
    entries: Vec<(u64, u64)>,
    full: u64,
    read_at: Option<Instant>,
    /// Inodes in the map that no instance serves, with when each was first seen so.
    unsampled: Vec<(u32, Instant)>,
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
    fn refresh(&mut self, max_age: Duration, sampled: &[(u32, usize)]) -> Result<(), BpfError> {
        let now = Instant::now();
        if self.read_at.is_some_and(|t| now.duration_since(t) < max_age) {
            return Ok(());
        }
        self.full = self.counter.read(&mut self.entries)?;
        self.read_at = Some(now);
        self.entries.sort_unstable_by_key(|e| e.0);
        for &(key, _) in &self.entries {
            let reason = key as u32;
            if !self.labels.iter().any(|(r, _)| *r == reason) {
                self.labels.push((reason, self.names.name(reason)));
            }
        }
        self.forget_unsampled(now, sampled)
    }

    /// Deletes the keys of inodes no instance has served for [`UNSAMPLED_GRACE`].
    fn forget_unsampled(&mut self, now: Instant, sampled: &[(u32, usize)]) -> Result<(), BpfError> {
        let is_sampled = |ino: u32| ino == 0 || sampled.iter().any(|(i, _)| *i == ino);
        self.unsampled.retain(|(ino, _)| !is_sampled(*ino));
        for &(key, _) in &self.entries {
            let ino = (key >> 32) as u32;
            if !is_sampled(ino) && !self.unsampled.iter().any(|(i, _)| *i == ino) {
                self.unsampled.push((ino, now));
            }
        }
        let expired = |since: &Instant| now.duration_since(*since) >= UNSAMPLED_GRACE;
        if !self.unsampled.iter().any(|(_, since)| expired(since)) {
            return Ok(());
        }
        let old: Vec<u32> = self
            .unsampled
            .iter()
            .filter(|(_, since)| expired(since))
            .map(|(i, _)| *i)
            .collect();
        let removed = self.counter.forget(|key| old.contains(&((key >> 32) as u32)))?;
        log::debug!(
            "drop_reasons: forgot {removed} keys of {} namespaces no longer sampled",
            old.len()
        );
        self.unsampled.retain(|(i, _)| !old.contains(i));
        self.entries.retain(|(key, _)| !old.contains(&((key >> 32) as u32)));
        Ok(())
    }

    /// The (reason, count) pairs of namespace `ino`.
    fn of(&self, ino: u32) -> impl Iterator<Item = (&str, u64)> {
        let lo = u64::from(ino) << 32;
        let start = self.entries.partition_point(|e| e.0 < lo);
        self.entries[start..]
            .iter()
            .take_while(move |e| e.0 >> 32 == u64::from(ino))
            .filter(|e| e.1 > 0)
            .map(|&(key, n)| {
                let reason = key as u32;
                let label = self
                    .labels
                    .iter()
                    .find(|(r, _)| *r == reason)
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
    /// The exporter's own namespace: it also serves the node's unattributed drops and the
    /// map's health.
    own: bool,
    max_age: Duration,
    /// The kernel's BTF, under `--path.sysfs`.
    btf: std::path::PathBuf,
}

impl DropReasons {
    pub fn new(cfg: &Config, ctx: &std::sync::Arc<NsContext>) -> Self {
        let key = ctx.netns.or_else(|| {
            if cfg.other_namespace {
                None
            } else {
                crate::netns::key_of(std::path::Path::new("/proc/thread-self/ns/net")).ok()
            }
        });
        let ino = key.and_then(|k| u32::try_from(k.1).ok());
        if let Some(ino) = ino {
            let mut g = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
            match g.sampled.iter_mut().find(|(i, _)| *i == ino) {
                Some((_, n)) => *n += 1,
                None => g.sampled.push((ino, 1)),
            }
        }
        // A read this much younger than a second serves: every namespace due within the
        // second shares one read, whichever tick of it each falls on.
        let max_age = READ_EVERY.saturating_sub(cfg.sample_interval / 2);
        Self {
            ino,
            own: !cfg.other_namespace,
            max_age,
            btf: cfg.roots.sysfs.join("kernel/btf/vmlinux"),
        }
    }
}

impl Drop for DropReasons {
    fn drop(&mut self) {
        let Some(ino) = self.ino else { return };
        let mut g = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pos) = g.sampled.iter().position(|(i, _)| *i == ino) {
            g.sampled[pos].1 -= 1;
            if g.sampled[pos].1 == 0 {
                g.sampled.swap_remove(pos);
                // Its keys go now: the inode may name the next namespace.
                if let State::Up(l) = &mut g.state {
                    if let Err(e) = l.counter.forget(|key| (key >> 32) as u32 == ino) {
                        log::debug!("drop_reasons: forgetting namespace {ino}: {e}");
                    }
                    l.entries.retain(|(key, _)| (key >> 32) as u32 != ino);
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
        let mut g = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
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
        let loaded = match &mut g.state {
            State::Up(l) => l,
            State::Down(e, true) => return Err(SourceError::Absent(e.clone())),
            State::Down(e, false) => return Err(SourceError::Other(e.clone())),
            State::NotLoaded => return Ok(()),
        };
        loaded
            .refresh(self.max_age, &g.sampled)
            .map_err(|e| SourceError::Other(e.to_string()))?;
        if let Some(ino) = self.ino {
            for (reason, n) in loaded.of(ino) {
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
