//! Stopping the sampler: a sender that wakes it when dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::source::Wake;

/// Ends [`Sampler::run`](super::Sampler::run) when dropped: the sampler stops at once (it is woken), not at
/// its next tick.
pub struct StopSender(Arc<StopState>);

/// The sampler's side of [`stop_pair`].
pub struct StopReceiver(Arc<StopState>);

#[derive(Default)]
struct StopState {
    stopped: AtomicBool,
    wake: Wake,
}

/// A stop signal for [`Sampler::run`](super::Sampler::run). The sampler sleeps as the slow lane does, with
/// `park_timeout` ([`Wake`]), which costs one futex wait a tick; a channel's
/// `recv_timeout` spun and registered wakers every tick, which showed in the idle
/// profile.
pub fn stop_pair() -> (StopSender, StopReceiver) {
    let state = Arc::new(StopState::default());
    (StopSender(Arc::clone(&state)), StopReceiver(state))
}

impl Drop for StopSender {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        self.0.wake.ask();
    }
}

impl StopReceiver {
    /// The thread that will wait on it is this one.
    pub(super) fn register(&self) {
        self.0.wake.register();
    }

    /// Sleeps until `deadline` or the stop, whichever comes first; whether stopped.
    pub(super) fn sleep_until(&self, deadline: Instant) -> bool {
        self.0.wake.sleep_until(deadline, &self.0.stopped);
        self.0.stopped.load(Ordering::SeqCst)
    }
}
