//! Local ports: the ephemeral range in use, and TIME_WAIT.

use super::*;

pub(super) fn ports(out: &mut Out<'_>) {
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

pub(super) fn time_wait(out: &mut Out<'_>) {
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
