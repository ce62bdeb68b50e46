//! The conntrack table: fill against the limit, drops, the breakdown's top
//! owners, and the limit kube-proxy will set.

use super::*;

pub(super) fn conntrack(out: &mut Out<'_>) {
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
