//! One immutable snapshot of every series, as the sampler publishes it and a scrape
//! encodes it in the Prometheus text format (version 0.0.4).
//!
//! Label sets are rendered once, when a source pushes a sample, into one string arena;
//! both the arena and the sample vector keep their capacity when the sampler recycles a
//! snapshot, so a steady-state sample allocates nothing.

use std::fmt::Write as _;

use crate::metrics::Desc;

#[derive(Debug, Clone, Copy)]
struct Sample {
    desc: &'static Desc,
    labels: (u32, u32),
    value: f64,
    seq: u32,
}

/// A set of samples ready to be served.
#[derive(Debug, Default)]
pub struct Snapshot {
    samples: Vec<Sample>,
    labels: String,
    /// Wall-clock time of the sample, seconds since the Unix epoch.
    pub taken_at: f64,
    /// When the sample was taken, on the monotonic clock (for `/-/healthy`).
    pub taken: Option<std::time::Instant>,
    /// When the slow lane last finished a round (or started, before its first), for
    /// `/-/healthy`: a slow lane that has died freezes its series while the fast lane
    /// goes on publishing.
    pub slow_round: Option<std::time::Instant>,
}

impl Snapshot {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&mut self) {
        self.samples.clear();
        self.labels.clear();
        self.taken_at = 0.0;
        self.taken = None;
        self.slow_round = None;
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Adds one sample. `labels` are (name, value) pairs; values are escaped here.
    pub fn push(&mut self, desc: &'static Desc, labels: &[(&str, &str)], value: f64) {
        let start = self.labels.len();
        render_labels(&mut self.labels, labels);
        let range = (as_u32(start), as_u32(self.labels.len()));
        self.push_rendered(desc, range, value);
    }

    fn push_rendered(&mut self, desc: &'static Desc, labels: (u32, u32), value: f64) {
        let seq = as_u32(self.samples.len());
        self.samples.push(Sample {
            desc,
            labels,
            value,
            seq,
        });
    }

    /// Keeps only the samples of the families `keep` accepts.
    pub fn retain(&mut self, keep: impl Fn(&'static Desc) -> bool) {
        self.samples.retain(|s| keep(s.desc));
    }

    /// Adds a sample with the label set of the sample at `index` (used for `_peak`).
    pub fn push_like(&mut self, index: usize, desc: &'static Desc, value: f64) {
        if let Some(s) = self.samples.get(index) {
            let labels = s.labels;
            self.push_rendered(desc, labels, value);
        }
    }

    /// Appends every sample of `other` with the rendered labels `prefix` put first (the
    /// labels of the network namespace a source ran in).
    pub fn extend_labelled(&mut self, other: &Snapshot, prefix: &str) {
        for s in &other.samples {
            let start = self.labels.len();
            self.labels.push_str(prefix);
            let own = other.label_str(s.labels);
            if !own.is_empty() {
                self.labels.push(',');
                self.labels.push_str(own);
            }
            let range = (as_u32(start), as_u32(self.labels.len()));
            self.push_rendered(s.desc, range, s.value);
        }
    }

    /// Appends every sample of `other` (a source's cached output).
    pub fn extend_from(&mut self, other: &Snapshot) {
        let base = as_u32(self.labels.len());
        self.labels.push_str(&other.labels);
        for s in &other.samples {
            self.push_rendered(s.desc, (s.labels.0 + base, s.labels.1 + base), s.value);
        }
    }

    /// The sample at `index`: its family, rendered label set and value.
    pub fn get(&self, index: usize) -> Option<(&'static Desc, &str, f64)> {
        let s = self.samples.get(index)?;
        Some((s.desc, self.label_str(s.labels), s.value))
    }

    fn label_str(&self, (a, b): (u32, u32)) -> &str {
        self.labels.get(a as usize..b as usize).unwrap_or("")
    }

    /// Every sample: family, rendered labels (`a="x",b="y"`), value.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Desc, &str, f64)> + '_ {
        self.samples.iter().map(|s| (s.desc, self.label_str(s.labels), s.value))
    }

    /// The value of one series, for tests and benches. `labels` as rendered.
    pub fn value(&self, name: &str, labels: &str) -> Option<f64> {
        self.iter()
            .find(|(d, l, _)| d.name == name && *l == labels)
            .map(|(_, _, v)| v)
    }

    /// Appends the text exposition of every family to `out`, in a deterministic order:
    /// families sorted by name, the series of a family by their rendered labels (as
    /// node_exporter's output is), so that two scrapes diff line by line; a histogram's
    /// buckets keep their push order (increasing `le`, as the text format requires: by
    /// text, "+Inf" would sort first).
    ///
    /// The order is made here, once per scrape, not on each sampler tick (sorting 7,300
    /// samples four times a second at 250 pods was 8 % of the exporter's CPU in `perf`).
    pub fn encode(&self, out: &mut String) {
        let mut order: Vec<u32> = (0..as_u32(self.samples.len())).collect();
        order.sort_unstable_by(|&x, &y| {
            let (a, b) = (&self.samples[x as usize], &self.samples[y as usize]);
            a.desc.name.cmp(b.desc.name).then_with(|| {
                if a.desc.kind == crate::metrics::Kind::Histogram {
                    a.seq.cmp(&b.seq)
                } else {
                    self.label_str(a.labels)
                        .cmp(self.label_str(b.labels))
                        .then(a.seq.cmp(&b.seq))
                }
            })
        });
        let mut family = "";
        for &i in &order {
            let s = &self.samples[i as usize];
            let desc = s.desc;
            if desc.family() != family {
                family = desc.family();
                let _ = writeln!(out, "# HELP {family} {}", escape_help(desc.help));
                let _ = writeln!(out, "# TYPE {family} {}", desc.kind.as_str());
            }
            out.push_str(desc.name);
            let labels = self.label_str(s.labels);
            if !labels.is_empty() {
                out.push('{');
                out.push_str(labels);
                out.push('}');
            }
            out.push(' ');
            write_value(out, s.value);
            out.push('\n');
        }
    }

    /// A size hint for the encoded text, to allocate the response once.
    pub fn encoded_len_hint(&self) -> usize {
        self.labels.len() + self.samples.len() * 64 + 4096
    }
}

/// Renders `a="x",b="y"` (values escaped as the text format requires) onto `out`.
pub fn render_labels(out: &mut String, labels: &[(&str, &str)]) {
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(out, value);
        out.push('"');
    }
}

fn as_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes backslash and newline (the text format's rule); the declared help
/// strings have neither, so this borrows.
fn escape_help(help: &str) -> std::borrow::Cow<'_, str> {
    if help.contains(['\\', '\n']) {
        help.replace('\\', "\\\\").replace('\n', "\\n").into()
    } else {
        help.into()
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{CONNTRACK_ENTRIES, SOURCE_UP};

    #[test]
    fn encodes_sorted_families_and_series_with_escaped_labels() {
        let mut s = Snapshot::new();
        s.push(&SOURCE_UP, &[("source", "b\"x\\\n")], 1.0);
        s.push(&CONNTRACK_ENTRIES, &[], 262_144.0);
        s.push(&SOURCE_UP, &[("source", "a")], 0.0);
        let mut out = String::new();
        s.encode(&mut out);
        // Families by name, series by labels, whatever the push order.
        let expected = "# HELP netpressure_conntrack_entries Conntrack entries in this network namespace, checked against the global limit.\n\
# TYPE netpressure_conntrack_entries gauge\n\
netpressure_conntrack_entries 262144\n\
# HELP netpressure_source_up 1 when the last sample of this source succeeded, 0 when it failed or the kernel lacks it.\n\
# TYPE netpressure_source_up gauge\n\
netpressure_source_up{source=\"a\"} 0\n\
netpressure_source_up{source=\"b\\\"x\\\\\\n\"} 1\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn help_escapes() {
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        assert_eq!(escape_help("plain"), "plain");
    }

    #[test]
    fn special_values() {
        let mut out = String::new();
        write_value(&mut out, f64::NAN);
        out.push(' ');
        write_value(&mut out, f64::INFINITY);
        out.push(' ');
        write_value(&mut out, 0.25);
        assert_eq!(out, "NaN +Inf 0.25");
    }
}
