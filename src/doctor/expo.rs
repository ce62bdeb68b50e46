//! The Prometheus text format, read back: the doctor works on what the exporter serves,
//! whether it sampled the node itself or scraped a running exporter (`--from`).

use std::collections::BTreeMap;

/// One sample: family name, labels (sorted by name), value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// The samples of one exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
}

/// Parses `name{k="v",...} value` lines; comments, blank lines and unparsable lines are
/// skipped (a doctor reads what it can).
pub fn parse(text: &str) -> Exposition {
    Exposition {
        samples: text.lines().filter_map(parse_line).collect(),
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut key = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    end = Some(i);
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()? {
                            (_, '\\') => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            (_, '"') => break,
                            (_, c) => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c => key.push(c),
            }
        }
        rest = &inner[end? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

impl Exposition {
    /// Every sample of a family.
    pub fn family<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sample of `name` whose labels include all of `matching`.
    pub fn find(&self, name: &str, matching: &[(&str, &str)]) -> Option<&Sample> {
        self.samples
            .iter()
            .find(|s| s.name == name && matching.iter().all(|(k, v)| s.label(k) == *v))
    }

    pub fn value(&self, name: &str, matching: &[(&str, &str)]) -> Option<f64> {
        self.find(name, matching).map(|s| s.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labels_escapes_and_special_values() {
        let e = parse(concat!(
            "# HELP x y\n",
            "# TYPE x gauge\n",
            "netpressure_sysctl{netns=\"host\",name=\"net.core.somaxconn\"} 4096\n",
            "a{b=\"q\\\"uote\\\\d\\nx\",c=\"\"} -Inf\n",
            "plain 1.5e3\n",
            "broken{a=\"x} 1\n",
        ));
        assert_eq!(e.samples.len(), 3);
        assert_eq!(
            e.value("netpressure_sysctl", &[("name", "net.core.somaxconn")]),
            Some(4096.0)
        );
        assert_eq!(e.samples[1].label("b"), "q\"uote\\d\nx");
        assert_eq!(e.samples[1].value, f64::NEG_INFINITY);
        assert_eq!(e.value("plain", &[]), Some(1500.0));
    }
}
