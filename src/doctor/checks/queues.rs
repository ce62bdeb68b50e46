//! Queues: accept queues, SYN backlogs, and the input backlog (softnet).

use super::*;

pub(super) fn listeners(out: &mut Out<'_>) {
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

pub(super) fn syn(out: &mut Out<'_>) {
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

pub(super) fn softnet(out: &mut Out<'_>) {
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
