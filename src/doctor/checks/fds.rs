//! File descriptors: per process against its limit, and the node's file-max.

use super::*;

pub(super) fn fds(out: &mut Out<'_>) {
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
