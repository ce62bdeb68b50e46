//! What each lane samples in a namespace: its slots, from the source registry and
//! the flags.

use std::fs::File;
use std::sync::Arc;

use super::lane::Families;
use super::slot::{ticks_for, Slot};
use super::{discovery, SLOW_TICK};
use crate::config::Config;
use crate::metrics::Desc;
use crate::netns::{self, NsKey};
use crate::source::settings::SettingsReader;
use crate::source::{Cadence, NsContext, SlowCadence, SourceInfo};

/// Builds the groups of one lane for one namespace from the registry.
#[derive(Clone)]
pub(super) struct Builder {
    pub(super) sources: Vec<&'static SourceInfo>,
    /// Own namespace: the flags as given.
    own: Config,
    /// Other namespaces: their scans follow `--netns.scan-interval`, their counters
    /// `--netns.interval`.
    other: Config,
    /// The sampler's, given to every slot.
    pub(super) panics: Arc<super::Panics>,
}

impl Builder {
    pub(super) fn new(cfg: &Config) -> Self {
        Self {
            sources: crate::source::enabled(&cfg.sources),
            own: cfg.clone(),
            other: Config {
                scan_interval: cfg.netns_scan_interval,
                counter_interval: cfg.netns_interval,
                other_namespace: true,
                ..cfg.clone()
            },
            panics: Arc::default(),
        }
    }

    /// The fast lane's slots: `own` for the exporter's namespace (node-wide sources
    /// included), else another namespace's.
    pub(super) fn fast_slots(&self, own: bool, ctx: &Arc<NsContext>) -> Vec<Slot> {
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
                Some(Slot::new(
                    build(cfg, ctx),
                    every,
                    s.namespaced,
                    !own,
                    Arc::clone(&self.panics),
                ))
            })
            .collect()
    }

    /// The slow lane's slots, run every scan.
    pub(super) fn slow_slots(&self, own: bool, ctx: &Arc<NsContext>) -> Vec<Slot> {
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
                Some(Slot::new(
                    build(cfg, ctx),
                    every,
                    s.namespaced,
                    !own,
                    Arc::clone(&self.panics),
                ))
            })
            .collect()
    }

    pub(super) fn settings(&self, own: bool) -> Option<(SettingsReader, u64)> {
        let cfg = if own { &self.own } else { &self.other };
        self.sources
            .iter()
            .any(|s| s.namespaced)
            .then(|| (SettingsReader::new(cfg), ticks_for(cfg.scan_interval, SLOW_TICK)))
    }
}

/// Which families other namespaces serve (`--netns.families`).
pub(super) fn families(cfg: &Config) -> Families {
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
pub(super) fn own_namespace(procfs: &std::path::Path) -> (Option<NsKey>, String, Option<File>) {
    let path = std::path::Path::new("/proc/thread-self/ns/net");
    let key = netns::key_of(path).ok();
    let value = match key {
        Some(k) => discovery::netns_value(k, netns::init_key(procfs)),
        None => "host".to_string(),
    };
    (key, value, File::open(path).ok())
}
