//! The doctor's checks: each reads the evidence (two expositions some seconds apart, and
//! what can be seen of the node itself when the doctor runs there) and yields findings
//! with a stable id, a severity, the numbers, and the setting to change.

mod conntrack;
mod fds;
mod ports;
mod queues;

use std::collections::{BTreeMap, BTreeSet};

use super::expo::{Exposition, Sample};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Critical,
    Warning,
    Info,
    Ok,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
            Self::Ok => "ok",
        }
    }
}

/// Every check, in the order they are listed.
pub const CHECKS: &[&str] = &[
    "conntrack-fill",
    "conntrack-drops",
    "conntrack-kube-proxy",
    "conntrack-hash",
    "listener-somaxconn",
    "listener-backlog",
    "syn-backlog",
    "softnet-backlog",
    "ports-remote",
    "timewait-buckets",
    "fd-system",
    "fd-process",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub check: &'static str,
    pub severity: Severity,
    /// The namespace's labels, where the finding is about one.
    pub netns: Option<String>,
    pub pod: Option<(String, String)>,
    /// What in the namespace: a listener, a remote endpoint, a process.
    pub subject: String,
    pub evidence: String,
    pub advice: String,
}

/// kube-proxy as found on the node: what it will write to nf_conntrack_max at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeProxy {
    pub pid: u32,
    pub max_per_core: u64,
    pub min: u64,
    /// Whether the values came from its command line or config file (else defaults).
    pub from_flags: bool,
    pub cpus: u64,
}

impl KubeProxy {
    /// What kube-proxy sets: max(per core × CPUs, min); 0 per core leaves it alone.
    pub fn will_set(&self) -> Option<u64> {
        (self.max_per_core > 0).then(|| (self.max_per_core * self.cpus).max(self.min))
    }
}

/// What the checks read.
#[derive(Debug, Default)]
pub struct Evidence {
    pub first: Exposition,
    pub last: Exposition,
    /// Seconds between the two.
    pub seconds: f64,
    /// Seen on the node itself (not with `--from`).
    pub kube_proxy: Option<KubeProxy>,
    pub local: bool,
    /// The pod of a process, by PID (local only).
    pub process_pods: BTreeMap<String, (String, String)>,
}

impl Evidence {
    /// How much a counter series (every sample of `name` with these labels, summed over
    /// any `cpu` label) rose between the two expositions; `None` when the first lacks it.
    pub fn increase(&self, name: &str, matching: &[(&str, &str)]) -> Option<f64> {
        let sum = |e: &Exposition| -> Option<f64> {
            let mut found = false;
            let mut total = 0.0;
            for s in e
                .family(name)
                .filter(|s| matching.iter().all(|(k, v)| s.label(k) == *v))
            {
                found = true;
                total += s.value;
            }
            found.then_some(total)
        };
        let (a, b) = (sum(&self.first)?, sum(&self.last)?);
        // A restart in between reset the counter: what it counted since is the rise.
        Some(if b >= a { b - a } else { b })
    }

    /// Packets the kernel dropped in `netns` with `reason` between the two expositions
    /// (`netpressure_packet_drops_total`, the drop_reasons collector). A reason has no
    /// series until its first drop, so one missing from the first exposition counted
    /// from zero. `None` where the last has none (no drops, or no collector).
    pub fn reason_drops(&self, netns: &str, reason: &str) -> Option<f64> {
        let key = [("netns", netns), ("reason", reason)];
        let last = self.last.value("netpressure_packet_drops_total", &key)?;
        let first = self.first.value("netpressure_packet_drops_total", &key).unwrap_or(0.0);
        Some(if last >= first { last - first } else { last }).filter(|n| *n > 0.0)
    }

    /// The namespaces in the last exposition, with their pod.
    pub fn namespaces(&self) -> BTreeMap<String, Option<(String, String)>> {
        let mut out = BTreeMap::new();
        for s in &self.last.samples {
            let netns = s.label("netns");
            if netns.is_empty() {
                continue;
            }
            let pod =
                (!s.label("pod").is_empty()).then(|| (s.label("namespace").to_string(), s.label("pod").to_string()));
            let e = out.entry(netns.to_string()).or_insert(None);
            if e.is_none() {
                *e = pod;
            }
        }
        out
    }

    fn sysctl(&self, netns: &str, name: &str) -> Option<f64> {
        self.last
            .value("netpressure_sysctl", &[("netns", netns), ("name", name)])
    }
}

/// "1 network namespace", "3 network namespaces".
pub fn namespaces_phrase(n: usize) -> String {
    format!("{n} network namespace{}", if n == 1 { "" } else { "s" })
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

struct Out<'a> {
    ev: &'a Evidence,
    findings: Vec<Finding>,
}

impl Out<'_> {
    fn add(
        &mut self,
        check: &'static str,
        severity: Severity,
        s: Option<&Sample>,
        subject: String,
        evidence: String,
        advice: &str,
    ) {
        let netns = s.map(|s| s.label("netns").to_string()).filter(|n| !n.is_empty());
        let pod = s
            .filter(|s| !s.label("pod").is_empty())
            .map(|s| (s.label("namespace").to_string(), s.label("pod").to_string()));
        self.findings.push(Finding {
            check,
            severity,
            netns,
            pod,
            subject,
            evidence,
            advice: advice.to_string(),
        });
    }

    fn secs(&self) -> String {
        format!("{:.0} s", self.ev.seconds)
    }
}

/// Runs every check; a check with nothing to report yields one `ok` finding.
pub fn run(ev: &Evidence) -> Vec<Finding> {
    let mut out = Out {
        ev,
        findings: Vec::new(),
    };
    conntrack::conntrack(&mut out);
    queues::listeners(&mut out);
    queues::syn(&mut out);
    queues::softnet(&mut out);
    ports::ports(&mut out);
    ports::time_wait(&mut out);
    fds::fds(&mut out);
    let reported: BTreeSet<&str> = out.findings.iter().map(|f| f.check).collect();
    let namespaces = ev.namespaces().len();
    for check in CHECKS {
        if !reported.contains(check) {
            let evidence = match *check {
                "conntrack-kube-proxy" if !ev.local => {
                    "not checked: kube-proxy is looked for on the node itself, not through --from".into()
                }
                "conntrack-kube-proxy" => "no kube-proxy process on this node".into(),
                _ => format!("nothing found in {}", namespaces_phrase(namespaces)),
            };
            out.findings.push(Finding {
                check,
                severity: Severity::Ok,
                netns: None,
                pod: None,
                subject: String::new(),
                evidence,
                advice: String::new(),
            });
        }
    }
    out.findings.sort_by(|a, b| {
        a.severity.cmp(&b.severity).then_with(|| {
            let pos = |c: &str| CHECKS.iter().position(|x| *x == c).unwrap_or(usize::MAX);
            pos(a.check).cmp(&pos(b.check))
        })
    });
    out.findings
}

#[cfg(test)]
mod tests {
    //! The node-wide checks a test cannot provoke without harming the machine (softnet
    //! drops, fs.file-max, the global hash size): their rules on expositions written
    //! here. The per-namespace checks are tested against the real kernel in
    //! tests/doctor.rs.
    use super::*;
    use crate::doctor::expo::parse;

    fn evidence(first: &str, last: &str) -> Evidence {
        Evidence {
            first: parse(first),
            last: parse(last),
            seconds: 5.0,
            ..Evidence::default()
        }
    }

    fn only<'a>(f: &'a [Finding], check: &str) -> Vec<&'a Finding> {
        f.iter()
            .filter(|x| x.check == check && x.severity != Severity::Ok)
            .collect()
    }

    #[test]
    fn softnet_drops_rising_in_the_window() {
        let f = run(&evidence(
            "netpressure_softnet_dropped_total 10\n",
            "netpressure_softnet_dropped_total 25\nnetpressure_softnet_backlog_limit 1000\n",
        ));
        let s = only(&f, "softnet-backlog");
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].evidence,
            "15 packets dropped at net.core.netdev_max_backlog 1000 in 5 s"
        );
        // Dropped before the window, not during it: nothing.
        let f = run(&evidence(
            "netpressure_softnet_dropped_total 25\n",
            "netpressure_softnet_dropped_total 25\n",
        ));
        assert!(only(&f, "softnet-backlog").is_empty());
    }

    #[test]
    fn the_kernels_reasons_are_cited_as_evidence() {
        let first = concat!(
            "netpressure_softnet_dropped_total 10\n",
            "netpressure_packet_drops_total{netns=\"4026532300\",namespace=\"shop\",pod=\"web-1\",reason=\"cpu_backlog\"} 5\n",
        );
        let last = concat!(
            "netpressure_softnet_dropped_total 40\n",
            "netpressure_softnet_backlog_limit 1000\n",
            "netpressure_packet_drops_total{netns=\"4026532300\",namespace=\"shop\",pod=\"web-1\",reason=\"cpu_backlog\"} 25\n",
            // A reason's series appears with its first drop: counted from zero.
            "netpressure_packet_drops_total{netns=\"4026532300\",namespace=\"shop\",pod=\"web-1\",reason=\"tcp_listen_overflow\"} 7\n",
            "netpressure_tcp_listen_queue_limit{netns=\"4026532300\",namespace=\"shop\",pod=\"web-1\",address=\"0.0.0.0\",port=\"80\"} 4096\n",
            "netpressure_tcp_listen_queue_length_peak{netns=\"4026532300\",namespace=\"shop\",pod=\"web-1\",address=\"0.0.0.0\",port=\"80\"} 12\n",
            "netpressure_sysctl{netns=\"4026532300\",namespace=\"shop\",pod=\"web-1\",name=\"net.core.somaxconn\"} 4096\n",
        );
        let f = run(&evidence(first, last));
        let s = only(&f, "softnet-backlog");
        assert_eq!(
            s[0].evidence,
            "30 packets dropped at net.core.netdev_max_backlog 1000 in 5 s; with reason cpu_backlog: 4026532300 (pod shop/web-1) 20"
        );
        // The queue never peaked at its limit, and no TCP counter is served: the
        // kernel's reason alone is the evidence.
        let l = only(&f, "listener-somaxconn");
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].severity, Severity::Critical);
        assert!(
            l[0].evidence
                .ends_with("the kernel dropped 7 packets with reason tcp_listen_overflow in the namespace"),
            "{}",
            l[0].evidence
        );
    }

    #[test]
    fn file_handles_near_file_max() {
        let f = run(&evidence(
            "",
            "netpressure_fd_allocated_peak 970\nnetpressure_fd_limit 1000\n",
        ));
        let s = only(&f, "fd-system");
        assert_eq!(s[0].severity, Severity::Critical);
        assert_eq!(s[0].evidence, "peak 970 of fs.file-max 1000 (97%)");
        let f = run(&evidence(
            "",
            "netpressure_fd_allocated_peak 100\nnetpressure_fd_limit 1000\n",
        ));
        assert!(only(&f, "fd-system").is_empty());
    }

    #[test]
    fn a_hash_far_smaller_than_the_limit() {
        let f = run(&evidence(
            "",
            concat!(
                "netpressure_conntrack_entries_limit{netns=\"host\"} 1048576\n",
                "netpressure_conntrack_buckets{netns=\"host\"} 65536\n",
            ),
        ));
        let s = only(&f, "conntrack-hash");
        assert_eq!(s[0].severity, Severity::Warning);
        assert!(
            s[0].evidence.ends_with("16 entries a bucket when full"),
            "{}",
            s[0].evidence
        );
        let f = run(&evidence(
            "",
            concat!(
                "netpressure_conntrack_entries_limit{netns=\"host\"} 262144\n",
                "netpressure_conntrack_buckets{netns=\"host\"} 65536\n",
            ),
        ));
        assert!(only(&f, "conntrack-hash").is_empty(), "kube-proxy's max/4 is fine");
    }

    #[test]
    fn every_check_reports_once_even_when_all_is_well() {
        let f = run(&evidence("", "netpressure_build_info 1\n"));
        assert_eq!(f.len(), CHECKS.len());
        assert!(f.iter().all(|x| x.severity == Severity::Ok));
    }
}
