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

/// One series with a `_peak` family: its peak family's name, its rendered labels, and
/// its window.
#[derive(Debug)]
struct Entry {
    name: &'static str,
    labels: String,
    window: Window,
}

/// The peak state of every series that has a `_peak` family.
///
/// The series come in the same order tick after tick, so the state is kept in that
/// order and matched by position: a tick compares each series' labels with the entry at
/// its position (no hashing, no allocation). Only when the set changes (a listener
/// opens, a namespace goes) is the order rebuilt, through a map by name and labels.
#[derive(Debug)]
pub struct Peaks {
    window: Duration,
    order: Vec<Entry>,
    rebuild: HashMap<(&'static str, String), Window>,
}

impl Peaks {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            order: Vec::new(),
            rebuild: HashMap::new(),
        }
    }

    /// Whether the series with a peak in `snap` are, in order, the ones of the last call.
    fn same_series(&self, snap: &Snapshot) -> bool {
        let mut at = 0;
        for i in 0..snap.len() {
            let Some((desc, labels, _)) = snap.get(i) else { break };
            let Some(peak) = desc.peak else { continue };
            match self.order.get(at) {
                Some(e) if std::ptr::eq(e.name, peak.name) && e.labels == labels => at += 1,
                _ => return false,
            }
        }
        at == self.order.len()
    }

    /// For every sample in `snap` whose family has a peak family, records the value and
    /// appends the window maximum as a sample of the peak family. Series that are no
    /// longer sampled (a listener closed, a namespace gone) lose their window.
    pub fn apply(&mut self, snap: &mut Snapshot, now: Instant) {
        if !self.same_series(snap) {
            self.reorder(snap);
        }
        let n = snap.len();
        let mut at = 0;
        for i in 0..n {
            let Some((desc, _, value)) = snap.get(i) else { break };
            let Some(peak_desc) = desc.peak else { continue };
            let Some(entry) = self.order.get_mut(at) else { break };
            at += 1;
            let peak = entry.window.observe(now, value, self.window);
            snap.push_like(i, peak_desc, peak);
        }
    }

    /// Lays the entries out in the order of `snap`'s series, keeping the windows of the
    /// series still there.
    fn reorder(&mut self, snap: &Snapshot) {
        self.rebuild.clear();
        for e in self.order.drain(..) {
            self.rebuild.insert((e.name, e.labels), e.window);
        }
        for i in 0..snap.len() {
            let Some((desc, labels, _)) = snap.get(i) else { break };
            let Some(peak) = desc.peak else { continue };
            let window = self
                .rebuild
                .remove(&(peak.name, labels.to_string()))
                .unwrap_or_default();
            self.order.push(Entry {
                name: peak.name,
                labels: labels.to_string(),
                window,
            });
        }
        // What is left belongs to series that are gone; the map keeps its capacity.
        self.rebuild.clear();
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

    fn snap(series: &[(&str, f64)]) -> Snapshot {
        let mut s = Snapshot::new();
        for (netns, v) in series {
            s.push(&crate::metrics::CONNTRACK_ENTRIES, &[("netns", netns)], *v);
        }
        s
    }

    fn peaks_of(s: &Snapshot) -> Vec<(String, f64)> {
        s.iter()
            .filter(|(d, _, _)| d.name == "netpressure_conntrack_entries_peak")
            .map(|(_, l, v)| (l.to_string(), v))
            .collect()
    }

    #[test]
    fn windows_follow_their_series_when_the_set_changes() {
        let t0 = Instant::now();
        let mut p = Peaks::new(Duration::from_secs(60));
        let mut s = snap(&[("a", 5.0), ("b", 7.0)]);
        p.apply(&mut s, t0);
        // A series appears in front of the others, which keep their windows.
        let mut s = snap(&[("new", 1.0), ("a", 2.0), ("b", 3.0)]);
        p.apply(&mut s, t0 + Duration::from_secs(1));
        assert_eq!(
            peaks_of(&s),
            [
                (r#"netns="new""#.to_string(), 1.0),
                (r#"netns="a""#.to_string(), 5.0),
                (r#"netns="b""#.to_string(), 7.0)
            ]
        );
        // "a" goes: its window goes with it, and comes back empty.
        let mut s = snap(&[("new", 1.0), ("b", 3.0)]);
        p.apply(&mut s, t0 + Duration::from_secs(2));
        let mut s = snap(&[("new", 1.0), ("a", 2.0), ("b", 3.0)]);
        p.apply(&mut s, t0 + Duration::from_secs(3));
        assert_eq!(peaks_of(&s)[1], (r#"netns="a""#.to_string(), 2.0));
        assert_eq!(p.order.len(), 3);
    }
}
