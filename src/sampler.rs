//! The clock: runs every enabled source on its own thread (off the async runtime), keeps
//! the sliding-window peaks, and publishes one immutable snapshot per tick. A scrape only
//! encodes the latest snapshot; it never touches the kernel.
//!
//! Each source has a cadence ([`Cadence`]): sources with pressure gauges run every
//! `--sample.interval`, counter-only sources every second, hash-walking dumps every
//! `--scan.interval`. Between runs a source's last output is served from its cache.
//!
//! Two snapshot buffers alternate: the sampler refills the one no scrape holds, so a
//! steady-state tick allocates nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::config::Config;
use crate::metrics;
use crate::peak::Peaks;
use crate::snapshot::Snapshot;
use crate::source::{Cadence, Source, SourceError, SourceStatus};

/// How long a source the kernel lacks is left alone before it is tried again (a module
/// such as nf_conntrack may be loaded later).
const ABSENT_RETRY: Duration = Duration::from_secs(10);

/// What scrapes read: `None` until the first sample.
pub type Published = watch::Receiver<Option<Arc<Snapshot>>>;

struct Slot {
    source: Box<dyn Source>,
    status: SourceStatus,
    retry_at: Option<Instant>,
    /// Run the source every this many ticks (its cadence).
    every_ticks: u64,
    /// The source's output of its last run, served on every tick until the next run.
    cache: Snapshot,
}

pub struct Sampler {
    slots: Vec<Slot>,
    peaks: Peaks,
    interval: Duration,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    spare: Arc<Snapshot>,
    overruns: u64,
    ticks: u64,
}

/// How many sample ticks make up `interval` (at least one).
fn ticks_for(interval: Duration, sample: Duration) -> u64 {
    let n = interval.as_nanos().div_ceil(sample.as_nanos().max(1));
    u64::try_from(n).unwrap_or(u64::MAX).max(1)
}

impl Sampler {
    pub fn new(cfg: &Config, sources: Vec<(Box<dyn Source>, Cadence)>) -> (Self, Published) {
        let (tx, rx) = watch::channel(None);
        let slots = sources
            .into_iter()
            .map(|(source, cadence)| {
                let interval = match cadence {
                    Cadence::Sample => cfg.sample_interval,
                    Cadence::Second => Duration::from_secs(1),
                    Cadence::Scan => cfg.scan_interval,
                };
                Slot {
                    source,
                    status: SourceStatus::default(),
                    retry_at: None,
                    every_ticks: ticks_for(interval, cfg.sample_interval),
                    cache: Snapshot::new(),
                }
            })
            .collect();
        let sampler = Self {
            slots,
            peaks: Peaks::new(cfg.peak_window),
            interval: cfg.sample_interval,
            tx,
            spare: Arc::new(Snapshot::new()),
            overruns: 0,
            ticks: 0,
        };
        (sampler, rx)
    }

    /// Builds the sources enabled in `cfg` and a sampler over them.
    pub fn from_config(cfg: &Config) -> (Self, Published) {
        let sources = cfg.sources.iter().map(|s| ((s.build)(cfg), s.cadence)).collect();
        Self::new(cfg, sources)
    }

    /// Takes one sample of every source and publishes it.
    pub fn tick(&mut self) {
        let now = Instant::now();
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
        for slot in &mut self.slots {
            if self.ticks % slot.every_ticks == 0 {
                sample_slot(slot, now);
            }
            snap.extend_from(&slot.cache);
        }
        self.ticks += 1;
        self.peaks.apply(snap, now);
        self.emit_self_metrics_into_spare();
        if let Some(snap) = Arc::get_mut(&mut self.spare) {
            snap.finish();
        }
        let published = self.tx.send_replace(Some(Arc::clone(&self.spare)));
        // The previous snapshot becomes the spare; it is refilled next tick once no
        // scrape holds it.
        if let Some(prev) = published {
            self.spare = prev;
        }
    }

    fn emit_self_metrics_into_spare(&mut self) {
        let Some(snap) = Arc::get_mut(&mut self.spare) else {
            return;
        };
        for slot in &self.slots {
            let name = slot.source.name();
            slot.status.emit(name, snap);
            slot.source.visit_status(&mut |sub, status| status.emit(sub, snap));
        }
        snap.push(&metrics::SAMPLER_OVERRUNS, &[], self.overruns as f64);
        snap.push(&metrics::SAMPLE_INTERVAL, &[], self.interval.as_secs_f64());
        snap.push(&metrics::PEAK_WINDOW, &[], self.peaks.window().as_secs_f64());
        snap.push(&metrics::LAST_SAMPLE, &[], snap.taken_at);
        snap.push(
            &metrics::BUILD_INFO,
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("NETPRESSURE_REVISION")),
            ],
            1.0,
        );
    }

    /// Samples on the clock until `stop` receives a message or its sender is dropped.
    /// A tick that overruns the interval skips the ticks it missed (counted) instead of
    /// bunching them up.
    pub fn run(mut self, stop: Receiver<()>) {
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
            match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Runs one source into its cache. A failed run leaves the cache empty: nothing
/// half-read is served.
fn sample_slot(slot: &mut Slot, now: Instant) {
    let name = slot.source.name();
    if slot.retry_at.is_some_and(|t| now < t) {
        return;
    }
    slot.cache.clear();
    let t = Instant::now();
    let cache = &mut slot.cache;
    let source = &mut slot.source;
    let result = catch_unwind(AssertUnwindSafe(|| source.sample(cache))).unwrap_or_else(|_| {
        Err(SourceError::Other(
            "the source panicked; this is a bug, please report it".into(),
        ))
    });
    let took = t.elapsed();
    match &result {
        Ok(()) => slot.retry_at = None,
        Err(e) => {
            slot.cache.clear();
            slot.retry_at = e.is_absent().then(|| now + ABSENT_RETRY);
        }
    }
    slot.status.record(name, result.as_ref().map(|_| ()), took);
}
