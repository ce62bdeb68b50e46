//! The doctor's checks: each reads the evidence (two expositions some seconds apart, and
//! what can be seen of the node itself when the doctor runs there) and yields findings
//! with a stable id, a severity, the numbers, and the setting to change.

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
    conntrack(&mut out);
    listeners(&mut out);
    syn(&mut out);
    softnet(&mut out);
    ports(&mut out);
    time_wait(&mut out);
    fds(&mut out);
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

fn conntrack(out: &mut Out<'_>) {
    let ev = out.ev;
    for s in ev.last.family("netpressure_conntrack_entries_limit") {
        let netns = s.label("netns");
        let limit = s.value;
        let peak = ev
            .last
            .value("netpressure_conntrack_entries_peak", &[("netns", netns)])
            .or_else(|| ev.last.value("netpressure_conntrack_entries", &[("netns", netns)]));
        if let Some(peak) = peak.filter(|_| limit > 0.0) {
            let fill = peak / limit;
            let severity = if fill >= 0.9 {
                Severity::Critical
            } else if fill >= 0.75 {
                Severity::Warning
            } else {
                Severity::Ok
            };
            if severity != Severity::Ok {
                let top = ev
                    .last
                    .family("netpressure_conntrack_top_source_entries")
                    .filter(|t| t.label("netns") == netns && t.label("source_address") != "other")
                    .max_by(|a, b| a.value.total_cmp(&b.value))
                    .map_or(String::new(), |t| {
                        let who = match t.label("source_pod") {
                            "" => t.label("source_address").to_string(),
                            p => format!(
                                "{} (pod {}/{p})",
                                t.label("source_address"),
                                t.label("source_namespace")
                            ),
                        };
                        format!("; top source {who} with {} entries", num(t.value))
                    });
                out.add(
                    "conntrack-fill",
                    severity,
                    Some(s),
                    "conntrack table".into(),
                    format!("peak {} entries of nf_conntrack_max {} ({}){top}", num(peak), num(limit), pct(fill)),
                    "Raise net.netfilter.nf_conntrack_max (and net.netfilter.nf_conntrack_buckets to a quarter of it); \
                     on Kubernetes set it through kube-proxy's --conntrack-max-per-core / --conntrack-min, which rewrite it at start-up. \
                     Or cut the flows that fill it: `netpressure_exporter conntrack-top --netns NETNS` names them.",
                );
            }
        }
        for (name, severity, what, advice) in [
            (
                "netpressure_conntrack_drop_total",
                Severity::Critical,
                "packets dropped because the table was full",
                "The table is full: see conntrack-fill, raise nf_conntrack_max, and find who fills it (conntrack-top).",
            ),
            (
                "netpressure_conntrack_early_drop_total",
                Severity::Warning,
                "unassured entries evicted to make room in a full table",
                "The table reached its limit and the kernel evicted entries to admit new flows: raise nf_conntrack_max before it starts dropping.",
            ),
            (
                "netpressure_conntrack_insert_failed_total",
                Severity::Warning,
                "conntrack insertions failed",
                "On Kubernetes this is usually the DNS race: two UDP queries on one socket (A and AAAA) clash in conntrack and one is dropped, \
                 so lookups stall for 5 s. Use `options single-request-reopen` (glibc) or NodeLocal DNSCache, or TCP for DNS.",
            ),
        ] {
            if let Some(n) = ev.increase(name, &[("netns", netns)]).filter(|n| *n > 0.0) {
                let mut evidence = format!("{} {what} in {}", num(n), out.secs());
                if name == "netpressure_conntrack_drop_total" {
                    if let Some(r) = ev.reason_drops(netns, "netfilter_drop") {
                        evidence.push_str(&format!(
                            "; the kernel dropped {} packets with reason netfilter_drop in the namespace",
                            num(r)
                        ));
                    }
                }
                out.add("conntrack-drops", severity, Some(s), "conntrack table".into(), evidence, advice);
            }
        }
    }
    // kube-proxy rewrites the limit at its start.
    let host_limit = ev
        .last
        .value("netpressure_conntrack_entries_limit", &[("netns", "host")])
        .or_else(|| {
            ev.last
                .family("netpressure_conntrack_entries_limit")
                .next()
                .map(|s| s.value)
        });
    if let (Some(kp), Some(limit)) = (&ev.kube_proxy, host_limit) {
        let source = if kp.from_flags {
            "from its flags or config"
        } else {
            "its defaults"
        };
        match kp.will_set() {
            Some(v) if (v as f64 - limit).abs() > 0.5 => out.add(
                "conntrack-kube-proxy",
                Severity::Warning,
                None,
                format!("kube-proxy (pid {})", kp.pid),
                format!(
                    "nf_conntrack_max is {} now; kube-proxy will set {} at its next start ({} per core x {} CPUs, at least {}, {source})",
                    num(limit),
                    v,
                    kp.max_per_core,
                    kp.cpus,
                    kp.min
                ),
                "A value set by hand is lost when kube-proxy restarts. Change kube-proxy's --conntrack-max-per-core \
                 (or conntrack.maxPerCore in its config) and --conntrack-min instead; 0 per core leaves the sysctl alone.",
            ),
            Some(v) => out.add(
                "conntrack-kube-proxy",
                Severity::Info,
                None,
                format!("kube-proxy (pid {})", kp.pid),
                format!(
                    "kube-proxy sets nf_conntrack_max to {v} ({} per core x {} CPUs, at least {}, {source}), as it is now",
                    kp.max_per_core, kp.cpus, kp.min
                ),
                "To change the limit, change kube-proxy's --conntrack-max-per-core or --conntrack-min, not the sysctl.",
            ),
            None => {}
        }
    }
    // The hash is shared: the limit against the buckets is the chain length when full.
    if let (Some(buckets), Some(limit)) = (
        ev.last.family("netpressure_conntrack_buckets").next().map(|s| s.value),
        host_limit,
    ) {
        if buckets > 0.0 && limit / buckets > 8.0 {
            out.add(
                "conntrack-hash",
                Severity::Warning,
                None,
                "conntrack hash".into(),
                format!(
                    "nf_conntrack_max {} over nf_conntrack_buckets {}: {:.0} entries a bucket when full",
                    num(limit),
                    num(buckets),
                    limit / buckets
                ),
                "Set net.netfilter.nf_conntrack_buckets to about a quarter of nf_conntrack_max (kube-proxy does when it sets the max), \
                 so that lookups in a full table stay short.",
            );
        }
    }
}

fn listeners(out: &mut Out<'_>) {
    let ev = out.ev;
    for s in ev.last.family("netpressure_tcp_listen_queue_limit") {
        let netns = s.label("netns");
        let key = [
            ("netns", netns),
            ("address", s.label("address")),
            ("port", s.label("port")),
        ];
        let limit = s.value;
        let peak = ev
            .last
            .value("netpressure_tcp_listen_queue_length_peak", &key)
            .unwrap_or(0.0);
        let somaxconn = ev.sysctl(netns, "net.core.somaxconn");
        let overflows = ev
            .increase("netpressure_tcp_listen_overflows_total", &[("netns", netns)])
            .unwrap_or(0.0);
        let subject = format!("listener {}:{}", s.label("address"), s.label("port"));
        let at_limit = peak >= limit && limit > 0.0;
        // The kernel's own reason for the drops, where the drop_reasons collector runs.
        let reason = ev.reason_drops(netns, "tcp_listen_overflow");
        let cited = reason.map_or(String::new(), |n| {
            format!(
                "; the kernel dropped {} packets with reason tcp_listen_overflow in the namespace",
                num(n)
            )
        });
        if somaxconn == Some(limit) && (at_limit || overflows > 0.0 || reason.is_some()) {
            out.add(
                "listener-somaxconn",
                if overflows > 0.0 || reason.is_some() {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                Some(s),
                subject,
                format!(
                    "its backlog is clamped to net.core.somaxconn {}; the accept queue peaked at {} of {}; {} listen overflows in the namespace in {}{cited}",
                    num(limit),
                    num(peak),
                    num(limit),
                    num(overflows),
                    out.secs()
                ),
                "Raise net.core.somaxconn in this namespace (on Kubernetes a pod-level sysctl: securityContext.sysctls \
                 net.core.somaxconn) and the application's listen backlog with it; accept faster if the queue stays full.",
            );
        } else if at_limit {
            out.add(
                "listener-backlog",
                Severity::Warning,
                Some(s),
                subject,
                format!(
                    "the accept queue peaked at its limit {} (net.core.somaxconn is {}): the application asked for a small backlog; {} listen overflows in {}{cited}",
                    num(limit),
                    somaxconn.map_or("unknown".into(), num),
                    num(overflows),
                    out.secs()
                ),
                "Raise the application's listen() backlog (nginx: `listen ... backlog=N`; most servers have a setting), \
                 and look at why it accepts slowly (CPU, a blocked accept loop).",
            );
        }
    }
}

fn syn(out: &mut Out<'_>) {
    let ev = out.ev;
    for s in ev.last.family("netpressure_tcp_syn_recv_sockets") {
        let netns = s.label("netns");
        let Some(max) = ev
            .last
            .value("netpressure_tcp_max_syn_backlog", &[("netns", netns)])
            .filter(|m| *m > 0.0)
        else {
            continue;
        };
        if s.value / max > 0.8 {
            out.add(
                "syn-backlog",
                Severity::Warning,
                Some(s),
                format!("listener {}:{}", s.label("address"), s.label("port")),
                format!("{} half-open connections against tcp_max_syn_backlog {}", num(s.value), num(max)),
                "Raise net.ipv4.tcp_max_syn_backlog in this namespace, keep net.ipv4.tcp_syncookies=1, and check for a SYN flood \
                 or clients that never finish the handshake.",
            );
        }
    }
    for (netns, _) in ev.namespaces() {
        let Some(drops) = ev
            .increase("netpressure_tcp_syn_queue_drops_total", &[("netns", &netns)])
            .filter(|n| *n > 0.0)
        else {
            continue;
        };
        let cookies = ev.sysctl(&netns, "net.ipv4.tcp_syncookies");
        let s = ev
            .last
            .find("netpressure_tcp_syn_queue_drops_total", &[("netns", &netns)]);
        out.add(
            "syn-backlog",
            if cookies == Some(0.0) {
                Severity::Critical
            } else {
                Severity::Warning
            },
            s,
            "SYN queue".into(),
            format!(
                "{} SYNs dropped in {}; tcp_syncookies is {}",
                num(drops),
                out.secs(),
                cookies.map_or("unknown".into(), num)
            ),
            "Turn net.ipv4.tcp_syncookies on (1) if it is off, raise tcp_max_syn_backlog, and the listener's backlog (the SYN queue \
             is bounded by it too).",
        );
    }
}

fn softnet(out: &mut Out<'_>) {
    let ev = out.ev;
    let Some(drops) = ev
        .increase("netpressure_softnet_dropped_total", &[])
        .filter(|n| *n > 0.0)
    else {
        return;
    };
    let limit = ev
        .last
        .family("netpressure_softnet_backlog_limit")
        .next()
        .map(|s| s.value);
    // Whose packets: the kernel's reason names the namespace that received them.
    let mut whose: Vec<(f64, String)> = ev
        .namespaces()
        .into_iter()
        .filter_map(|(netns, pod)| {
            let n = ev.reason_drops(&netns, "cpu_backlog")?;
            let name = pod.map_or(netns.clone(), |(ns, p)| format!("{netns} (pod {ns}/{p})"));
            Some((n, name))
        })
        .collect();
    whose.sort_by(|a, b| b.0.total_cmp(&a.0));
    let cited = if whose.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = whose
            .iter()
            .take(3)
            .map(|(n, who)| format!("{who} {}", num(*n)))
            .collect();
        format!("; with reason cpu_backlog: {}", list.join(", "))
    };
    out.add(
        "softnet-backlog",
        Severity::Warning,
        None,
        "input backlog".into(),
        format!(
            "{} packets dropped at net.core.netdev_max_backlog {} in {}{cited}",
            num(drops),
            limit.map_or("unknown".into(), num),
            out.secs()
        ),
        "Raise net.core.netdev_max_backlog (for example to twice its value), and spread receive processing over CPUs \
         (RSS/RPS, irqbalance).",
    );
}

fn ports(out: &mut Out<'_>) {
    let ev = out.ev;
    // Sockets per (namespace, remote): the states summed.
    let mut by_remote: BTreeMap<(String, String, String), (f64, f64, &Sample)> = BTreeMap::new();
    for s in ev.last.family("netpressure_tcp_remote_sockets") {
        let key = (
            s.label("netns").to_string(),
            s.label("remote_address").to_string(),
            s.label("remote_port").to_string(),
        );
        let e = by_remote.entry(key).or_insert((0.0, 0.0, s));
        e.0 += s.value;
        if s.label("state") == "time_wait" {
            e.1 += s.value;
        }
    }
    for ((netns, addr, port), (total, tw, s)) in by_remote {
        let Some(size) = ev
            .last
            .value("netpressure_local_port_range_size", &[("netns", &netns)])
            .filter(|v| *v > 0.0)
        else {
            continue;
        };
        let share = total / size;
        if share < 0.5 {
            continue;
        }
        let reuse = ev.sysctl(&netns, "net.ipv4.tcp_tw_reuse");
        let stamps = ev.sysctl(&netns, "net.ipv4.tcp_timestamps");
        let reuse_step = match (reuse, stamps) {
            _ if tw == 0.0 => "tcp_tw_reuse would not help: none of them is in TIME_WAIT".to_string(),
            (Some(r), Some(t)) if r == 1.0 && t > 0.0 => "tcp_tw_reuse is on already".to_string(),
            (_, Some(0.0)) => {
                "then net.ipv4.tcp_tw_reuse=1, which needs net.ipv4.tcp_timestamps=1 (off here)".to_string()
            }
            _ => "then net.ipv4.tcp_tw_reuse=1 (with tcp_timestamps on)".to_string(),
        };
        out.add(
            "ports-remote",
            if share >= 0.8 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            Some(s),
            format!("remote {addr}:{port}"),
            format!(
                "{} sockets ({} in TIME_WAIT) hold {} of the {} local ports; tcp_tw_reuse={}, tcp_timestamps={}",
                num(total),
                num(tw),
                pct(share),
                num(size),
                reuse.map_or("unknown".into(), num),
                stamps.map_or("unknown".into(), num)
            ),
            &format!(
                "In this order: pool and keep alive the connections to this endpoint (the real fix); {reuse_step}; widen \
                 net.ipv4.ip_local_port_range or spread over more destination addresses. Never tcp_tw_recycle (removed in 4.12, \
                 it broke clients behind NAT); SO_LINGER 0 (reset on close) only as a last resort."
            ),
        );
    }
}

fn time_wait(out: &mut Out<'_>) {
    let ev = out.ev;
    for s in ev.last.family("netpressure_tcp_time_wait_limit") {
        let netns = s.label("netns");
        let peak = ev
            .last
            .value("netpressure_tcp_time_wait_sockets_peak", &[("netns", netns)])
            .unwrap_or(0.0);
        let overflows = ev
            .increase("netpressure_tcp_time_wait_overflows_total", &[("netns", netns)])
            .unwrap_or(0.0);
        let share = if s.value > 0.0 { peak / s.value } else { 0.0 };
        if overflows > 0.0 || share >= 0.8 {
            out.add(
                "timewait-buckets",
                if overflows > 0.0 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                Some(s),
                "TIME_WAIT".into(),
                format!(
                    "TIME_WAIT peaked at {} of tcp_max_tw_buckets {} ({}); {} sockets closed without TIME_WAIT (overflow) in {}",
                    num(peak),
                    num(s.value),
                    pct(share),
                    num(overflows),
                    out.secs()
                ),
                "Pool connections so fewer are closed; tcp_tw_reuse=1 lets new connections reuse TIME_WAIT ports. Raising \
                 net.ipv4.tcp_max_tw_buckets keeps TIME_WAIT's protection against late segments at a little memory per socket.",
            );
        }
    }
}

fn fds(out: &mut Out<'_>) {
    let ev = out.ev;
    if let (Some(peak), Some(max)) = (
        ev.last
            .value("netpressure_fd_allocated_peak", &[])
            .or_else(|| ev.last.value("netpressure_fd_allocated", &[])),
        ev.last.value("netpressure_fd_limit", &[]).filter(|m| *m > 0.0),
    ) {
        let share = peak / max;
        if share >= 0.8 {
            out.add(
                "fd-system",
                if share >= 0.95 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                None,
                "system file handles".into(),
                format!("peak {} of fs.file-max {} ({})", num(peak), num(max), pct(share)),
                "Raise fs.file-max, and find the processes holding the most (fd-process).",
            );
        }
    }
    for s in ev.last.family("netpressure_process_open_fds") {
        let key = [("pid", s.label("pid")), ("comm", s.label("comm"))];
        let Some(limit) = ev.last.value("netpressure_process_fd_limit", &key).filter(|l| *l > 0.0) else {
            continue;
        };
        let share = s.value / limit;
        if share < 0.8 {
            continue;
        }
        let pod = ev
            .process_pods
            .get(s.label("pid"))
            .map_or(String::new(), |(ns, p)| format!(" in pod {ns}/{p}"));
        out.add(
            "fd-process",
            if share >= 0.95 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            Some(s),
            format!("process {} (pid {}){pod}", s.label("comm"), s.label("pid")),
            format!("{} open descriptors of its RLIMIT_NOFILE {} ({})", num(s.value), num(limit), pct(share)),
            "Raise its limit where it is started: LimitNOFILE= in its systemd unit, the container runtime's default ulimit \
             (containerd/docker `--default-ulimit nofile=`), or `ulimit -n` in its start script; if the count only grows, \
             look for a descriptor leak (ls -l /proc/PID/fd).",
        );
    }
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
