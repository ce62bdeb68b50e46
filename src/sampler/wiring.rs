//! What each lane samples in a namespace: its slots, from the source registry and
//! the flags.

use std::fs::File;
use std::sync::Arc;

use super::discovery;
use super::lane::Families;
use super::slot::Slot;
use crate::cadence::{Cadences, Scope};
use crate::config::Config;
use crate::metrics::Desc;
use crate::netns::{self, NsKey};
use crate::source::settings::SettingsReader;
use crate::source::{NsContext, SourceInfo};

/// Builds the groups of one lane for one namespace from the registry.
#[derive(Clone)]
pub(super) struct Builder {
    pub(super) sources: Vec<&'static SourceInfo>,
    cfg: Config,
    cadences: Cadences,
    /// The sampler's, given to every slot.
    pub(super) panics: Arc<super::Panics>,
}

impl Builder {
    pub(super) fn new(cfg: &Config) -> Self {
        Self {
            sources: crate::source::enabled(&cfg.sources),
            cfg: cfg.clone(),
            cadences: Cadences::new(cfg),
            panics: Arc::default(),
        }
    }

    /// The fast lane's slots: `own` for the exporter's namespace (node-wide sources
    /// included), else another namespace's.
    pub(super) fn fast_slots(&self, own: bool, ctx: &Arc<NsContext>) -> Vec<Slot> {
        self.slots(own, ctx, |s, scope| {
            s.fast
                .map(|(cadence, build)| (self.cadences.fast_ticks(cadence, scope), build))
        })
    }

    /// The slow lane's slots, run every scan.
    pub(super) fn slow_slots(&self, own: bool, ctx: &Arc<NsContext>) -> Vec<Slot> {
        self.slots(own, ctx, |s, scope| {
            s.slow
                .map(|(cadence, build)| (self.cadences.slow_ticks(cadence, scope), build))
        })
    }

    /// A slot for each enabled source that has the `part` a lane runs (its period in
    /// that lane's ticks, and how to build it).
    fn slots(
        &self,
        own: bool,
        ctx: &Arc<NsContext>,
        part: impl Fn(&SourceInfo, Scope) -> Option<(u64, crate::source::Build)>,
    ) -> Vec<Slot> {
        let scope = if own { Scope::Own } else { Scope::Other };
        self.sources
            .iter()
            .filter(|s| own || s.namespaced)
            .filter_map(|s| {
                let (every, build) = part(s, scope)?;
                Some(Slot::new(
                    build(&self.cfg, ctx),
                    every,
                    s.namespaced,
                    !own,
                    Arc::clone(&self.panics),
                ))
            })
            .collect()
    }

    pub(super) fn settings(&self, own: bool) -> Option<(SettingsReader, u64)> {
        let scope = if own { Scope::Own } else { Scope::Other };
        self.sources.iter().any(|s| s.namespaced).then(|| {
            (
                SettingsReader::new(&self.cfg),
                self.cadences.slow_ticks(crate::cadence::SlowCadence::Scan, scope),
            )
        })
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
