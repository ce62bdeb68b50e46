//! One source in one namespace, as a lane runs it: its cadence, its health, and the
//! output of its last run, served on every tick until the next run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::snapshot::Snapshot;
use crate::source::{Source, SourceError, SourceStatus, Want};

use crate::cadence::ABSENT_RETRY;

pub struct Slot {
    pub source: Box<dyn Source>,
    pub status: SourceStatus,
    retry_at: Option<Instant>,
    /// Run every this many ticks of its lane.
    pub every_ticks: u64,
    /// The cadence window (ticks offset by the group's phase, divided by `every_ticks`)
    /// of its last run: a source runs once a window, at the first round in it, however
    /// many rounds an early wake-up of its lane adds to the window.
    window: Option<u64>,
    /// Series carry the namespace's labels.
    pub namespaced: bool,
    /// The output of the last run.
    pub cache: Snapshot,
    /// Where a panic of its source is counted.
    panics: std::sync::Arc<super::Panics>,
}

/// The window of `every` ticks that tick `ticks` (offset by `phase`) falls in.
pub fn window(ticks: u64, phase: u64, every: u64) -> u64 {
    ticks.wrapping_add(phase) / every.max(1)
}

/// What a run came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    Done,
    /// The source has to open a handle inside its namespace: run it again there.
    NeedsEntering,
}

impl Slot {
    /// `quiet`: one of many instances in other namespaces, whose state changes are
    /// logged at debug only (the lanes report them in aggregate).
    pub fn new(
        mut source: Box<dyn Source>,
        every_ticks: u64,
        namespaced: bool,
        quiet: bool,
        panics: std::sync::Arc<super::Panics>,
    ) -> Self {
        if quiet {
            source.set_quiet();
        }
        Self {
            source,
            status: SourceStatus::new(quiet),
            retry_at: None,
            every_ticks,
            window: None,
            namespaced,
            cache: Snapshot::new(),
            panics,
        }
    }

    /// Due on its cadence (offset by its group's `phase`): once in each window of
    /// `every_ticks` ticks, at the first round in it. At once when it has never run, so
    /// that a newly found namespace is served in full from its first round.
    pub fn due(&self, ticks: u64, phase: u64) -> bool {
        if self.status.samples == 0 {
            return true;
        }
        match self.source.want() {
            Want::Now => true,
            Want::Not => false,
            Want::Cadence => self.window != Some(window(ticks, phase, self.every_ticks)),
        }
    }

    /// Records that the slot runs in this round (call when [`Slot::due`] said so).
    pub fn claim(&mut self, ticks: u64, phase: u64) {
        self.window = Some(window(ticks, phase, self.every_ticks));
    }

    /// Runs the source into its cache. A failed run leaves the cache empty: nothing
    /// half-read is served. A source that panics is reported down, not propagated.
    pub fn run(&mut self, now: Instant) -> Run {
        if self.retry_at.is_some_and(|t| now < t) {
            return Run::Done;
        }
        self.cache.clear();
        let t = Instant::now();
        let (cache, source) = (&mut self.cache, &mut self.source);
        let result = catch_unwind(AssertUnwindSafe(|| source.sample(cache))).unwrap_or_else(|_| {
            self.panics.record(source.name());
            Err(SourceError::Panicked)
        });
        match &result {
            Err(e) if e.needs_entering() => {
                self.cache.clear();
                return Run::NeedsEntering;
            }
            Ok(()) => self.retry_at = None,
            Err(e) => {
                self.cache.clear();
                self.retry_at = e.is_absent().then(|| now + ABSENT_RETRY);
            }
        }
        self.status
            .record(self.source.name(), result.as_ref().map(|_| ()), t.elapsed());
        Run::Done
    }

    /// Records a run that could not happen (the namespace could not be entered).
    pub fn fail(&mut self, why: &str) {
        self.cache.clear();
        let err = SourceError::NotRun(why.to_string());
        self.status.record(self.source.name(), Err(&err), Duration::ZERO);
    }
}
