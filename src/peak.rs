//! Sliding-window maxima for the `_peak` gauges.
//!
//! Each series keeps a monotonic deque of (time, value): values decrease from front to
//! back, so the front is the maximum of the window, and every sample is pushed and
//! popped at most once (amortised O(1) a sample). The window slides with the sample
//! clock and is never reset by a scrape, so two Prometheus servers scraping the same
//! exporter read the same peak.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::snapshot::Snapshot;

#[derive(Debug, Default)]
struct Window {
    points: VecDeque<(Instant, f64)>,
    generation: u64,
}

impl Window {
    fn observe(&mut self, now: Instant, value: f64, window: Duration) -> f64 {
        if !value.is_nan() {
            while self.points.back().is_some_and(|(_, v)| *v <= value) {
                self.points.pop_back();
            }
            self.points.push_back((now, value));
        }
        while self
            .points
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > window)
        {
            self.points.pop_front();
        }
        self.points.front().map_or(value, |(_, v)| *v)
    }
}

/// The peak state of every series that has a `_peak` family.
#[derive(Debug)]
pub struct Peaks {
    window: Duration,
    series: HashMap<String, Window>,
    key: String,
    generation: u64,
}

impl Peaks {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            series: HashMap::new(),
            key: String::new(),
            generation: 0,
        }
    }

    /// For every sample in `snap` whose family has a peak family, records the value and
    /// appends the window maximum as a sample of the peak family. Series that are no
    /// longer sampled (a listener closed, a namespace gone) lose their window.
    pub fn apply(&mut self, snap: &mut Snapshot, now: Instant) {
        self.generation = self.generation.wrapping_add(1);
        let n = snap.len();
        for i in 0..n {
            let Some((desc, labels, value)) = snap.get(i) else {
                break;
            };
            let Some(peak_desc) = desc.peak else { continue };
            self.key.clear();
            self.key.push_str(peak_desc.name);
            self.key.push('{');
            self.key.push_str(labels);
            if !self.series.contains_key(self.key.as_str()) {
                self.series.insert(self.key.clone(), Window::default());
            }
            let Some(window) = self.series.get_mut(self.key.as_str()) else {
                continue;
            };
            window.generation = self.generation;
            let peak = window.observe(now, value, self.window);
            snap.push_like(i, peak_desc, peak);
        }
        let generation = self.generation;
        self.series.retain(|_, w| w.generation == generation);
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides_and_is_exact() {
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        let mut win = Window::default();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(win.observe(at(0), 5.0, w), 5.0);
        assert_eq!(win.observe(at(1), 3.0, w), 5.0);
        assert_eq!(win.observe(at(2), 4.0, w), 5.0);
        assert_eq!(win.observe(at(10), 1.0, w), 5.0);
        // 5.0 (t=0) leaves the window; 4.0 (t=2) is now the maximum.
        assert_eq!(win.observe(at(11), 1.0, w), 4.0);
        assert_eq!(win.observe(at(13), 2.0, w), 2.0);
        assert_eq!(win.observe(at(14), 9.0, w), 9.0);
        assert_eq!(win.points.len(), 1);
    }
}
