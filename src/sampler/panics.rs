//! Panics caught in the sampler, counted per source or step, and the faults tests
//! inject to cause them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::metrics;
use crate::snapshot::Snapshot;
use crate::sync::lock;

/// Panics caught in one sampler, by source (or lane step), for
/// `netpressure_source_panics_total`: both lanes and every slot of one sampler count
/// in the same one (two samplers in one process, as in tests, count apart).
#[derive(Debug, Default)]
pub struct Panics {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    repeats: Mutex<BTreeMap<&'static str, crate::logging::Repeats>>,
}

impl Panics {
    /// Counts a caught panic of `what` and logs it (at most once per ten minutes per
    /// `what`, through the repeat limiter).
    pub fn record(&self, what: &'static str) {
        *lock(&self.counts).entry(what).or_default() += 1;
        let msg = format!("{what} panicked; this is a bug, please report it (the sampler goes on)");
        lock(&self.repeats)
            .entry(what)
            .or_default()
            .log(log::Level::Error, &msg);
    }

    pub(super) fn emit(&self, snap: &mut Snapshot) {
        for (what, n) in lock(&self.counts).iter() {
            snap.push(&metrics::SOURCE_PANICS, &[("source", what)], *n as f64);
        }
    }

    /// The panics of `what` counted so far.
    pub fn count(&self, what: &str) -> u64 {
        lock(&self.counts).get(what).copied().unwrap_or(0)
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
