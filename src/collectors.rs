//! The collectors the command line knows (`--collector.NAME`, `--no-collector.NAME`):
//! their names, what each serves, and whether it is on by default. Data only, so that
//! the flags (`config`) need nothing of the sources that implement them (`source`,
//! whose registry [`crate::source::SOURCES`] has one entry per collector here, in the
//! same order; a test holds the two together).

#[derive(Debug)]
pub struct Collector {
    pub name: &'static str,
    pub help: &'static str,
    pub default_enabled: bool,
}

pub static COLLECTORS: &[Collector] = &[
    Collector {
        name: "conntrack",
        help: "conntrack table fill, limit, hash size, TCP timeouts and per-CPU counters (ctnetlink, procfs fallback)",
        default_enabled: true,
    },
    Collector {
        name: "netstat",
        help: "TCP listen-queue, SYN-queue, syncookie, TIME_WAIT and connection counters (/proc/net/netstat, snmp)",
        default_enabled: true,
    },
    Collector {
        name: "sockstat",
        help: "TCP sockets in use, orphaned and in TIME_WAIT, against tcp_max_tw_buckets (/proc/net/sockstat)",
        default_enabled: true,
    },
    Collector {
        name: "listeners",
        help: "accept queue and limit per listener every sample, SYN_RECV per listener every scan (sock_diag)",
        default_enabled: true,
    },
    Collector {
        name: "remotes",
        help: "sockets holding an ephemeral local port per remote endpoint, by state, every scan (sock_diag)",
        default_enabled: true,
    },
    Collector {
        name: "softnet",
        help: "input backlog drops and squeezes (/proc/net/softnet_stat) against netdev_max_backlog",
        default_enabled: true,
    },
    Collector {
        name: "sysctl",
        help: "the per-namespace tuning values that bound these pressures (somaxconn, tcp_max_syn_backlog, ...), every scan",
        default_enabled: true,
    },
    Collector {
        name: "drop_reasons",
        help: "packets the kernel dropped, per namespace and drop reason, counted by a BPF program on skb:kfree_skb (5.17+, BTF, CAP_BPF and CAP_PERFMON or CAP_SYS_ADMIN)",
        default_enabled: true,
    },
    Collector {
        name: "filefd",
        help: "system-wide file handles against fs.file-max, and fs.nr_open (/proc/sys/fs)",
        default_enabled: true,
    },
    Collector {
        name: "processes",
        help: "the processes nearest their RLIMIT_NOFILE, every scan (/proc/PID/fd, /proc/PID/limits)",
        default_enabled: true,
    },
    Collector {
        name: "process",
        help: "the exporter's own process_* metrics",
        default_enabled: true,
    },
];
