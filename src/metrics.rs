//! Every metric family the exporter serves, declared once: name, type, help text, and
//! the family that carries its sliding-window peak. Names are a contract with the
//! dashboards and alerts; docs/metrics.md lists them with their labels.

use crate::model::CtCounter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    /// One of the `_bucket`, `_sum` and `_count` series of a histogram: the family is
    /// the name without that suffix.
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

impl Desc {
    /// The family name: the name, or for a histogram series the name without its suffix.
    pub fn family(&self) -> &'static str {
        if self.kind == Kind::Histogram {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = self.name.strip_suffix(suffix) {
                    return base;
                }
            }
        }
        self.name
    }
}

const fn histogram(name: &'static str, help: &'static str) -> Desc {
    Desc {
        name,
        help,
        kind: Kind::Histogram,
        peak: None,
    }
}

/// A histogram kept by the sampler itself (not a kernel value): cumulative counts over
/// fixed bounds, a sum and a count, as the text format serves them.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
    labels: Vec<String>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
            labels: bounds.iter().map(ToString::to_string).collect(),
        }
    }

    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    /// Pushes the series of the histogram whose `_bucket` series is `bucket` (its `_sum`
    /// and `_count` are the descriptors declared right after it, see
    /// [`SAMPLE_DURATION`]).
    pub fn emit(&self, h: &'static [Desc; 3], out: &mut crate::snapshot::Snapshot) {
        for (le, c) in self.labels.iter().zip(&self.counts) {
            out.push(&h[0], &[("le", le)], *c as f64);
        }
        out.push(&h[0], &[("le", "+Inf")], self.count as f64);
        out.push(&h[1], &[], self.sum);
        out.push(&h[2], &[], self.count as f64);
    }
}

#[derive(Debug)]
pub struct Desc {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// Where set, the sampler keeps the maximum of this gauge over the peak window and
    /// serves it as this second family, with the same labels.
    pub peak: Option<&'static Desc>,
}

const fn gauge(name: &'static str, help: &'static str) -> Desc {
    Desc {
        name,
        help,
        kind: Kind::Gauge,
        peak: None,
    }
}

const fn counter(name: &'static str, help: &'static str) -> Desc {
    Desc {
        name,
        help,
        kind: Kind::Counter,
        peak: None,
    }
}

// --- conntrack -----------------------------------------------------------------------

pub static CONNTRACK_ENTRIES: Desc = Desc {
    peak: Some(&CONNTRACK_ENTRIES_PEAK),
    ..gauge(
        "netpressure_conntrack_entries",
        "Conntrack entries in this network namespace, checked against the global limit.",
    )
};
// --- conntrack breakdown (a table under pressure: --collector.conntrack.breakdown-*) ---

pub static CT_BREAKDOWN_STATE: Desc = gauge(
    "netpressure_conntrack_breakdown_entries",
    "Entries of a table under pressure by protocol and state (TCP states; other protocols: unreplied, replied, assured), from its last breakdown.",
);
pub static CT_TOP_SOURCES: Desc = gauge(
    "netpressure_conntrack_top_source_entries",
    "Entries of a table under pressure by original source address (top --collector.conntrack.breakdown-top, the rest as source_address=\"other\"), with source_netns/source_namespace/source_pod of the namespace on the node that owns the address.",
);
pub static CT_TOP_DESTINATIONS: Desc = gauge(
    "netpressure_conntrack_top_destination_entries",
    "Entries of a table under pressure by original destination address, port and protocol (top --collector.conntrack.breakdown-top, the rest as destination_address=\"other\").",
);
pub static CT_BREAKDOWN_DUMPED: Desc = gauge(
    "netpressure_conntrack_breakdown_dumped_entries",
    "Entries the last breakdown dump of this table saw.",
);
pub static CT_BREAKDOWN_DURATION: Desc = gauge(
    "netpressure_conntrack_breakdown_duration_seconds",
    "How long the last breakdown dump of this table took (it walks the whole global hash).",
);
pub static CT_BREAKDOWN_COMPLETE: Desc = gauge(
    "netpressure_conntrack_breakdown_complete",
    "1 when the last breakdown saw the whole table; 0 when it was cut at its time limit and covers only part of it.",
);
pub static CT_BREAKDOWN_TIMESTAMP: Desc = gauge(
    "netpressure_conntrack_breakdown_timestamp_seconds",
    "When the served breakdown of this table was taken (Unix time).",
);
pub static CT_BREAKDOWNS: Desc = counter(
    "netpressure_conntrack_breakdowns_total",
    "Breakdown dumps of this table (one at most every --collector.conntrack.breakdown-interval while it is at or above the threshold).",
);
pub static CT_BREAKDOWNS_CUT: Desc = counter(
    "netpressure_conntrack_breakdowns_cut_total",
    "Breakdown dumps of this table cut at their time limit.",
);

pub static CONNTRACK_ENTRIES_PEAK: Desc = gauge(
    "netpressure_conntrack_entries_peak",
    "Highest netpressure_conntrack_entries sampled over the sliding peak window (--sample.peak-window).",
);
pub static CONNTRACK_ENTRIES_LIMIT: Desc = gauge(
    "netpressure_conntrack_entries_limit",
    "nf_conntrack_max: the entry limit each network namespace is checked against (global).",
);
pub static CONNTRACK_BUCKETS: Desc = gauge(
    "netpressure_conntrack_buckets",
    "nf_conntrack_buckets: size of the conntrack hash table shared by all namespaces.",
);
pub static CONNTRACK_TCP_TIMEOUT: Desc = gauge(
    "netpressure_conntrack_tcp_timeout_seconds",
    "Conntrack timeout of TCP entries in the given state (nf_conntrack_tcp_timeout_*).",
);

/// One family per conntrack counter, in [`CtCounter`] order.
pub static CONNTRACK_COUNTERS: [Desc; CtCounter::COUNT] = [
    counter(
        "netpressure_conntrack_found_total",
        "Conntrack lookups that found an entry.",
    ),
    counter(
        "netpressure_conntrack_invalid_total",
        "Packets conntrack could not track (invalid).",
    ),
    counter("netpressure_conntrack_insert_total", "Conntrack entries inserted."),
    counter(
        "netpressure_conntrack_insert_failed_total",
        "Conntrack insertions that failed, e.g. a clash of two packets racing for one tuple (Kubernetes DNS delays).",
    ),
    counter(
        "netpressure_conntrack_drop_total",
        "Packets dropped because a new conntrack entry could not be allocated: the table was full.",
    ),
    counter(
        "netpressure_conntrack_early_drop_total",
        "Conntrack entries evicted early to make room in a full table.",
    ),
    counter(
        "netpressure_conntrack_error_total",
        "Packets conntrack rejected as erroneous (ICMP errors included).",
    ),
    counter(
        "netpressure_conntrack_search_restart_total",
        "Conntrack hash lookups restarted because the table changed under them.",
    ),
    counter(
        "netpressure_conntrack_clash_resolve_total",
        "Conntrack insert clashes that were resolved instead of dropped.",
    ),
    counter(
        "netpressure_conntrack_chain_too_long_total",
        "Conntrack inserts refused because a hash chain was too long.",
    ),
];

pub fn conntrack_counter(c: CtCounter) -> &'static Desc {
    &CONNTRACK_COUNTERS[c.index()]
}

// --- self-metrics --------------------------------------------------------------------

pub static SOURCE_UP: Desc = gauge(
    "netpressure_source_up",
    "1 when the last sample of this source succeeded, 0 when it failed or the kernel lacks it.",
);
pub static SOURCE_ERRORS: Desc = counter("netpressure_source_errors_total", "Samples of this source that failed.");
pub static SOURCE_DURATION: Desc = gauge(
    "netpressure_source_duration_seconds",
    "Time the last sample of this source took.",
);
pub static SAMPLES: Desc = counter("netpressure_samples_total", "Samples taken of this source.");
/// Bounds of [`SAMPLE_DURATION`], seconds: a tick of the own namespace takes tens of
/// microseconds; other namespaces' rounds add a few milliseconds.
pub static SAMPLE_DURATION_BUCKETS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];
/// The fast lane's tick duration: `_bucket`, `_sum`, `_count`.
pub static SAMPLE_DURATION: [Desc; 3] = [
    histogram(
        "netpressure_sample_duration_seconds_bucket",
        "Time one tick of the fast lane took (every source due, other namespaces included, and publishing).",
    ),
    histogram(
        "netpressure_sample_duration_seconds_sum",
        "Time one tick of the fast lane took (every source due, other namespaces included, and publishing).",
    ),
    histogram(
        "netpressure_sample_duration_seconds_count",
        "Time one tick of the fast lane took (every source due, other namespaces included, and publishing).",
    ),
];
pub static SAMPLER_OVERRUNS: Desc = counter(
    "netpressure_sampler_overruns_total",
    "Sample ticks skipped because the previous sample overran --sample.interval.",
);
pub static SAMPLE_INTERVAL: Desc = gauge(
    "netpressure_sample_interval_seconds",
    "The configured --sample.interval.",
);
pub static PEAK_WINDOW: Desc = gauge(
    "netpressure_peak_window_seconds",
    "The configured --sample.peak-window over which _peak gauges hold their maximum.",
);
pub static LAST_SAMPLE: Desc = gauge(
    "netpressure_last_sample_timestamp_seconds",
    "Unix time at which the served snapshot was taken.",
);
pub static BUILD_INFO: Desc = gauge(
    "netpressure_build_info",
    "A metric with a constant 1 labelled by the version and git revision of the exporter.",
);

// --- the exporter's own process ------------------------------------------------------

pub static PROCESS_CPU: Desc = counter(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
);
pub static PROCESS_RSS: Desc = gauge("process_resident_memory_bytes", "Resident memory size in bytes.");
pub static PROCESS_VSIZE: Desc = gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.");
pub static PROCESS_OPEN_FDS: Desc = gauge("process_open_fds", "Number of open file descriptors.");
pub static PROCESS_MAX_FDS: Desc = gauge("process_max_fds", "Maximum number of open file descriptors.");
pub static PROCESS_START: Desc = gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
);

// --- TCP counters (/proc/net/netstat, /proc/net/snmp) --------------------------------

pub static TCP_LISTEN_OVERFLOWS: Desc = counter(
    "netpressure_tcp_listen_overflows_total",
    "Connections dropped because a listener's accept queue was full (TcpExt ListenOverflows).",
);
pub static TCP_LISTEN_DROPS: Desc = counter(
    "netpressure_tcp_listen_drops_total",
    "Every drop on a listening socket, overflows included (TcpExt ListenDrops).",
);
pub static TCP_SYN_QUEUE_DROPS: Desc = counter(
    "netpressure_tcp_syn_queue_drops_total",
    "SYNs dropped because the SYN queue was full and syncookies were off (TcpExt TCPReqQFullDrop).",
);
pub static TCP_SYN_QUEUE_COOKIES: Desc = counter(
    "netpressure_tcp_syn_queue_cookies_total",
    "SYNs answered with a syncookie because the SYN queue was full (TcpExt TCPReqQFullDoCookies).",
);
pub static TCP_SYNCOOKIES_SENT: Desc = counter(
    "netpressure_tcp_syncookies_sent_total",
    "Syncookies sent (TcpExt SyncookiesSent).",
);
pub static TCP_SYNCOOKIES_RECV: Desc = counter(
    "netpressure_tcp_syncookies_recv_total",
    "Valid syncookie ACKs received (TcpExt SyncookiesRecv).",
);
pub static TCP_SYNCOOKIES_FAILED: Desc = counter(
    "netpressure_tcp_syncookies_failed_total",
    "Invalid syncookie ACKs received (TcpExt SyncookiesFailed).",
);
pub static TCP_TW_OVERFLOWS: Desc = counter(
    "netpressure_tcp_time_wait_overflows_total",
    "TIME_WAIT sockets not created because tcp_max_tw_buckets was reached (TcpExt TCPTimeWaitOverflow).",
);
pub static TCP_TW_REUSED: Desc = counter(
    "netpressure_tcp_time_wait_reused_total",
    "TIME_WAIT 4-tuples reused by connect() under tcp_tw_reuse (TcpExt TWRecycled).",
);
pub static TCP_ACTIVE_OPENS: Desc = counter(
    "netpressure_tcp_active_opens_total",
    "Outgoing TCP connections started (Tcp ActiveOpens).",
);
pub static TCP_PASSIVE_OPENS: Desc = counter(
    "netpressure_tcp_passive_opens_total",
    "Incoming TCP connections accepted by the kernel (Tcp PassiveOpens).",
);
pub static TCP_ATTEMPT_FAILS: Desc = counter(
    "netpressure_tcp_attempt_fails_total",
    "TCP connection attempts that failed (Tcp AttemptFails).",
);
pub static TCP_ESTAB_RESETS: Desc = counter(
    "netpressure_tcp_estab_resets_total",
    "Established TCP connections reset (Tcp EstabResets).",
);

// --- sockstat ------------------------------------------------------------------------

pub static TCP_TW_SOCKETS: Desc = Desc {
    peak: Some(&TCP_TW_SOCKETS_PEAK),
    ..gauge(
        "netpressure_tcp_time_wait_sockets",
        "TCP sockets in TIME_WAIT in this network namespace (sockstat tw).",
    )
};
pub static TCP_TW_SOCKETS_PEAK: Desc = gauge(
    "netpressure_tcp_time_wait_sockets_peak",
    "Highest netpressure_tcp_time_wait_sockets sampled over the sliding peak window.",
);
pub static TCP_TW_LIMIT: Desc = gauge(
    "netpressure_tcp_time_wait_limit",
    "tcp_max_tw_buckets: TIME_WAIT sockets beyond it are not created (connections close without TIME_WAIT).",
);
pub static TCP_INUSE: Desc = gauge(
    "netpressure_tcp_sockets_in_use",
    "TCP sockets in use in this network namespace, IPv4 and IPv6 (sockstat inuse + sockstat6 inuse).",
);
pub static TCP_ORPHAN: Desc = gauge(
    "netpressure_tcp_orphan_sockets",
    "TCP sockets no longer attached to a process (sockstat orphan; global across namespaces).",
);

// --- listeners -----------------------------------------------------------------------

pub static LISTEN_QUEUE: Desc = Desc {
    peak: Some(&LISTEN_QUEUE_PEAK),
    ..gauge(
        "netpressure_tcp_listen_queue_length",
        "Connections waiting in a listener's accept queue (not yet accept()ed).",
    )
};
pub static LISTEN_QUEUE_PEAK: Desc = gauge(
    "netpressure_tcp_listen_queue_length_peak",
    "Highest netpressure_tcp_listen_queue_length sampled over the sliding peak window.",
);
pub static LISTEN_QUEUE_LIMIT: Desc = gauge(
    "netpressure_tcp_listen_queue_limit",
    "A listener's accept-queue limit: its listen() backlog after the somaxconn clamp. The kernel holds at most limit+1.",
);
pub static LISTEN_SOCKETS: Desc = gauge(
    "netpressure_tcp_listen_sockets",
    "Sockets listening on this address and port: more than 1 for an SO_REUSEPORT group, whose queue and limit series are those of its fullest socket.",
);
pub static SYN_RECV: Desc = gauge(
    "netpressure_tcp_syn_recv_sockets",
    "Half-open connections (SYN_RECV request sockets) of a listener, counted every --scan.interval.",
);
pub static MAX_SYN_BACKLOG: Desc = gauge(
    "netpressure_tcp_max_syn_backlog",
    "tcp_max_syn_backlog: the SYN queue limit of a listener is min(backlog, this).",
);
pub static LISTENERS: Desc = gauge(
    "netpressure_tcp_listeners",
    "TCP listeners seen, one per address and port (an SO_REUSEPORT group counts once; after --collector.listeners.ports).",
);
pub static LISTENERS_OMITTED: Desc = gauge(
    "netpressure_tcp_listeners_omitted",
    "Listeners left out of the per-listener series by --collector.listeners.max (the least full).",
);

// --- remotes -------------------------------------------------------------------------

pub static REMOTE_SOCKETS: Desc = gauge(
    "netpressure_tcp_remote_sockets",
    "TCP sockets to one remote endpoint holding a local port from ip_local_port_range, by state; top --collector.remotes.top remotes.",
);
pub static PORT_RANGE_SIZE: Desc = gauge(
    "netpressure_local_port_range_size",
    "Ports in ip_local_port_range: the most connections one local address can hold to one remote endpoint.",
);
pub static REMOTES: Desc = gauge(
    "netpressure_tcp_remotes",
    "Distinct remote endpoints of sockets holding an ephemeral local port, at the last scan.",
);
pub static REMOTES_OMITTED: Desc = gauge(
    "netpressure_tcp_remotes_omitted",
    "Remote endpoints left out of netpressure_tcp_remote_sockets by --collector.remotes.top.",
);
pub static REMOTES_SKIPPED: Desc = gauge(
    "netpressure_tcp_remotes_scan_skipped",
    "1 when the last remotes scan was skipped: the namespace held fewer TCP sockets (in use plus TIME_WAIT) than 1/8 of its local port range, so no remote could hold more, and netpressure_tcp_remote_sockets is absent; 0 after a scan.",
);

// --- softnet -------------------------------------------------------------------------

pub static SOFTNET_DROPPED: Desc = counter(
    "netpressure_softnet_dropped_total",
    "Packets dropped because a CPU's input backlog exceeded netdev_max_backlog (global).",
);
pub static SOFTNET_SQUEEZED: Desc = counter(
    "netpressure_softnet_times_squeezed_total",
    "Times net_rx_action ran out of budget with work left (global).",
);
pub static SOFTNET_BACKLOG_LIMIT: Desc = gauge(
    "netpressure_softnet_backlog_limit",
    "netdev_max_backlog: the per-CPU input packet backlog limit (global).",
);

// --- tuning --------------------------------------------------------------------------

pub static SYSCTL: Desc = gauge(
    "netpressure_sysctl",
    "Current value of a kernel tuning parameter that bounds the pressures above, by sysctl name.",
);

// --- file descriptors ----------------------------------------------------------------

pub static FD_ALLOCATED: Desc = Desc {
    peak: Some(&FD_ALLOCATED_PEAK),
    ..gauge(
        "netpressure_fd_allocated",
        "File handles allocated system-wide (first field of /proc/sys/fs/file-nr).",
    )
};
pub static FD_ALLOCATED_PEAK: Desc = gauge(
    "netpressure_fd_allocated_peak",
    "Highest netpressure_fd_allocated sampled over the sliding peak window.",
);
pub static FD_LIMIT: Desc = gauge(
    "netpressure_fd_limit",
    "fs.file-max: the system-wide file handle limit (\"VFS: file-max limit reached\").",
);
pub static FD_PROCESS_CEILING: Desc = gauge(
    "netpressure_fd_process_ceiling",
    "fs.nr_open: the highest RLIMIT_NOFILE any process may be given.",
);
pub static PROCESS_OPEN_FDS_TOP: Desc = gauge(
    "netpressure_process_open_fds",
    "Open file descriptors of one of the processes nearest their limit (top --collector.processes.top).",
);
pub static PROCESS_FD_LIMIT_TOP: Desc = gauge(
    "netpressure_process_fd_limit",
    "Soft RLIMIT_NOFILE of one of the processes nearest their limit: open() fails with EMFILE at this count.",
);
pub static PROCESSES_SCANNED: Desc = gauge(
    "netpressure_processes_scanned",
    "Processes with open file descriptors seen by the last process scan.",
);
pub static POD_FD_USAGE: Desc = gauge(
    "netpressure_pod_fd_usage_ratio",
    "The fullest process of a pod: its open file descriptors over its own soft RLIMIT_NOFILE (0 to 1), every scan. One series per pod, whatever its processes.",
);
pub static PROCESSES_UNREADABLE: Desc = gauge(
    "netpressure_processes_unreadable",
    "Processes the last scan could not read (permissions: CAP_SYS_PTRACE, hidepid); not in the top-K.",
);

pub static SOURCE_PANICS: Desc = counter(
    "netpressure_source_panics_total",
    "Panics caught in the sampler, by source or slow-lane step (discovery, address_owners, slow_lane): a bug; the sampler goes on and the source reports itself down.",
);

// --- the HTTP endpoint ---------------------------------------------------------------

pub static HTTP_CONNECTIONS: Desc = gauge(
    "netpressure_http_connections",
    "HTTP connections held by the exporter (at most --web.max-connections).",
);
pub static HTTP_EVICTED: Desc = counter(
    "netpressure_http_connections_evicted_total",
    "Connections closed to make room at --web.max-connections, quietest first: requests refused by basic auth or awaiting a verification, then idle ones and unfinished handshakes or headers (authenticated clients' last), then a response whose client stopped reading for 5 s; never a response being read. Within each, the client or listen address holding most connections gives one up first.",
);
pub static HTTP_REJECTED: Desc = counter(
    "netpressure_http_requests_rejected_total",
    "Scrapes answered 503 because --web.max-requests were being served already.",
);
pub static HTTP_UNAUTHORIZED: Desc = counter(
    "netpressure_http_requests_unauthorized_total",
    "Requests refused for their credentials (basic_auth_users in --web.config.file): none or wrong (401), the verifier busy (503), or the client gone before its password was checked.",
);
pub static HTTP_AUTH_VERIFICATIONS: Desc = counter(
    "netpressure_http_auth_verifications_total",
    "bcrypt verifications run for basic auth (tens of ms of CPU each, one at a time); credentials seen before are answered from memory.",
);
pub static HTTP_AUTH_ABANDONED: Desc = counter(
    "netpressure_http_auth_abandoned_total",
    "Basic-auth checks skipped unverified because the client hung up while waiting (also counted as unauthorized).",
);
pub static HTTP_TLS_HANDSHAKE_ERRORS: Desc = counter(
    "netpressure_http_tls_handshake_errors_total",
    "TLS handshakes that failed: a refused, untrusted or missing client certificate, no common version or suite, or not finished within 10 s.",
);
pub static HTTP_TLS_PLAINTEXT: Desc = counter(
    "netpressure_http_tls_plaintext_requests_total",
    "Plain HTTP sent to the TLS port, answered 400 (a scraper configured with http:// instead of https://).",
);
pub static WEB_CONFIG_RELOAD_OK: Desc = gauge(
    "netpressure_web_config_last_reload_successful",
    "1 when the last read of --web.config.file (at a change, or SIGHUP) loaded; 0 when it failed and the previous configuration is still served.",
);

/// What the HTTP server counts, for the sampler to serve with the other self-metrics.
#[derive(Debug)]
pub struct HttpStats {
    pub connections: std::sync::atomic::AtomicU64,
    pub evicted: std::sync::atomic::AtomicU64,
    pub rejected: std::sync::atomic::AtomicU64,
    pub unauthorized: std::sync::atomic::AtomicU64,
    pub auth_verifications: std::sync::atomic::AtomicU64,
    pub auth_abandoned: std::sync::atomic::AtomicU64,
    pub tls_handshake_errors: std::sync::atomic::AtomicU64,
    pub tls_plaintext: std::sync::atomic::AtomicU64,
    pub web_config_ok: std::sync::atomic::AtomicBool,
}

impl Default for HttpStats {
    fn default() -> Self {
        Self {
            connections: 0.into(),
            evicted: 0.into(),
            rejected: 0.into(),
            unauthorized: 0.into(),
            auth_verifications: 0.into(),
            auth_abandoned: 0.into(),
            tls_handshake_errors: 0.into(),
            tls_plaintext: 0.into(),
            web_config_ok: true.into(),
        }
    }
}

impl HttpStats {
    pub fn emit(&self, out: &mut crate::snapshot::Snapshot) {
        use std::sync::atomic::Ordering::Relaxed;
        out.push(&HTTP_CONNECTIONS, &[], self.connections.load(Relaxed) as f64);
        out.push(&HTTP_EVICTED, &[], self.evicted.load(Relaxed) as f64);
        out.push(&HTTP_REJECTED, &[], self.rejected.load(Relaxed) as f64);
        out.push(&HTTP_UNAUTHORIZED, &[], self.unauthorized.load(Relaxed) as f64);
        out.push(
            &HTTP_AUTH_VERIFICATIONS,
            &[],
            self.auth_verifications.load(Relaxed) as f64,
        );
        out.push(&HTTP_AUTH_ABANDONED, &[], self.auth_abandoned.load(Relaxed) as f64);
        out.push(
            &HTTP_TLS_HANDSHAKE_ERRORS,
            &[],
            self.tls_handshake_errors.load(Relaxed) as f64,
        );
        out.push(&HTTP_TLS_PLAINTEXT, &[], self.tls_plaintext.load(Relaxed) as f64);
        out.push(
            &WEB_CONFIG_RELOAD_OK,
            &[],
            f64::from(u8::from(self.web_config_ok.load(Relaxed))),
        );
    }
}

// --- drop reasons (BPF on skb:kfree_skb) -----------------------------------------------

pub static PACKET_DROPS: Desc = counter(
    "netpressure_packet_drops_total",
    "Packets the kernel dropped in this namespace, by its drop reason (enum skb_drop_reason, counted in the kernel on skb:kfree_skb). Reasons with no drops have no series.",
);
pub static PACKET_DROPS_UNATTRIBUTED: Desc = counter(
    "netpressure_packet_drops_unattributed_total",
    "Dropped packets with neither a device nor a socket to tell their namespace, by drop reason (served with the exporter's own namespace).",
);
pub static DROP_MAP_FULL: Desc = counter(
    "netpressure_drop_reasons_map_full_total",
    "Drops not counted by reason because the kernel map of (namespace, reason) pairs was full.",
);
pub static DROP_MAP_ENTRIES: Desc = gauge(
    "netpressure_drop_reasons_map_entries",
    "(namespace, reason) pairs in the kernel's drop map, against netpressure_drop_reasons_map_entries_limit.",
);
pub static DROP_MAP_LIMIT: Desc = gauge(
    "netpressure_drop_reasons_map_entries_limit",
    "The capacity of the kernel's drop map.",
);

// --- network namespaces --------------------------------------------------------------

pub static NETNS_SAMPLED: Desc = gauge(
    "netpressure_netns_sampled",
    "Network namespaces sampled besides the exporter's own (--collector.netns).",
);
pub static NETNS_OMITTED: Desc = gauge(
    "netpressure_netns_omitted",
    "Network namespaces found but not sampled because of --netns.max.",
);
pub static NETNS_SOURCE_DOWN: Desc = gauge(
    "netpressure_netns_source_down",
    "Sampled namespaces in which this source's last run failed.",
);
pub static NETNS_SOURCE_ERRORS: Desc = counter(
    "netpressure_netns_source_errors_total",
    "Failed runs of this source in the namespaces besides the exporter's own.",
);
pub static NETNS_ROUNDS: Desc = counter(
    "netpressure_netns_samples_total",
    "Samples of other namespaces' gauges taken by the fast lane (one per namespace per --netns.sample-interval).",
);
pub static NETNS_ENTERED: Desc = counter(
    "netpressure_netns_entered_total",
    "Times a thread entered another network namespace (setns): to open handles there, to read its sysctls every --netns.scan-interval, or to dump a table under pressure for its breakdown. Steady-state samples enter none.",
);
pub static NETNS_ENTER_ERRORS: Desc = counter(
    "netpressure_netns_enter_errors_total",
    "Failed attempts to enter a network namespace (setns; EPERM without CAP_SYS_ADMIN); the namespace is tried again at the next discovery.",
);
pub static NODE_PASS_UP: Desc = gauge(
    "netpressure_node_pass_up",
    "1 if the node pass (one BPF program reading every namespace's conntrack and TIME_WAIT counts and every listener's queues) is loaded; 0 if every namespace is read on its own (a kernel before 5.17, no BTF, no CAP_BPF and CAP_PERFMON, --no-netns.node-pass).",
);
pub static NODE_PASS_USED: Desc = gauge(
    "netpressure_node_pass_used",
    "1 if the other namespaces' field (conntrack, listeners, time_wait) is read by the node pass, 0 if per namespace (the pass disagreed with the kernel's own interfaces in the exporter's namespace, or was not yet compared).",
);
pub static NODE_PASS_RUNS: Desc = counter(
    "netpressure_node_pass_runs_total",
    "Runs of the node pass (one per --netns.sample-interval while other namespaces are sampled).",
);
pub static NODE_PASS_ERRORS: Desc = counter(
    "netpressure_node_pass_errors_total",
    "Runs of the node pass that failed (the namespaces were read on their own that round).",
);
pub static NODE_PASS_SECONDS: Desc = counter(
    "netpressure_node_pass_seconds_total",
    "Wall time spent in the node pass, in the kernel and copying its records.",
);
pub static NODE_PASS_NAMESPACES: Desc = gauge(
    "netpressure_node_pass_namespaces",
    "Network namespaces the last node pass found on the node (all of them, sampled or not).",
);
pub static NODE_PASS_LISTENERS: Desc = gauge(
    "netpressure_node_pass_listeners",
    "TCP listening sockets the last node pass found on the node.",
);
pub static NODE_PASS_OMITTED: Desc = gauge(
    "netpressure_node_pass_omitted",
    "Namespaces and listeners the last node pass could not record (over 4,096 and 8,192): those namespaces, and with a listener left out every namespace's listeners, are read on their own that round.",
);
pub static NETNS_DISCOVERY_DURATION: Desc = gauge(
    "netpressure_netns_discovery_duration_seconds",
    "Time the last namespace discovery took (listing /proc/*/ns/net and PID 1's mountinfo).",
);

/// The families served for other namespaces (pods) by default: what the alerts and
/// dashboards use, and the pressure each namespace has on its own. 23 series for an idle
/// namespace, plus 5 per listener and 3 per remote endpoint served. Node-wide values
/// (the hash size, orphans) and the counters that only describe traffic are left to the
/// exporter's own namespace; `--netns.families` chooses otherwise.
pub fn default_netns_families() -> Vec<&'static str> {
    [
        &CONNTRACK_ENTRIES,
        &CONNTRACK_ENTRIES_LIMIT,
        &CONNTRACK_COUNTERS[CtCounter::Drop as usize],
        &CONNTRACK_COUNTERS[CtCounter::EarlyDrop as usize],
        &CONNTRACK_COUNTERS[CtCounter::InsertFailed as usize],
        &TCP_LISTEN_OVERFLOWS,
        &TCP_LISTEN_DROPS,
        &TCP_SYN_QUEUE_DROPS,
        &TCP_TW_OVERFLOWS,
        &TCP_TW_SOCKETS,
        &TCP_TW_LIMIT,
        &TCP_INUSE,
        &LISTEN_QUEUE,
        &LISTEN_QUEUE_LIMIT,
        &LISTEN_SOCKETS,
        &SYN_RECV,
        &MAX_SYN_BACKLOG,
        &LISTENERS,
        &LISTENERS_OMITTED,
        &REMOTE_SOCKETS,
        &PORT_RANGE_SIZE,
        &REMOTES_SKIPPED,
        &SYSCTL,
        // Only reasons that dropped something have a series.
        &PACKET_DROPS,
        // The breakdown: no series until a table is under pressure.
        &CT_BREAKDOWN_STATE,
        &CT_TOP_SOURCES,
        &CT_TOP_DESTINATIONS,
        &CT_BREAKDOWN_DUMPED,
        &CT_BREAKDOWN_DURATION,
        &CT_BREAKDOWN_COMPLETE,
        &CT_BREAKDOWN_TIMESTAMP,
        &CT_BREAKDOWNS,
        &CT_BREAKDOWNS_CUT,
    ]
    .iter()
    .map(|d| d.name)
    .collect()
}

/// The families the namespaced sources serve (their `_peak` twins follow them), in
/// which `--netns.families` chooses those served for other namespaces: the default ones
/// and the rest.
pub fn namespaced_families() -> Vec<&'static str> {
    let mut v = default_netns_families();
    v.extend(
        [
            &CONNTRACK_BUCKETS,
            &CONNTRACK_TCP_TIMEOUT,
            &TCP_SYN_QUEUE_COOKIES,
            &TCP_SYNCOOKIES_SENT,
            &TCP_SYNCOOKIES_RECV,
            &TCP_SYNCOOKIES_FAILED,
            &TCP_TW_REUSED,
            &TCP_ACTIVE_OPENS,
            &TCP_PASSIVE_OPENS,
            &TCP_ATTEMPT_FAILS,
            &TCP_ESTAB_RESETS,
            &TCP_ORPHAN,
            &REMOTES,
            &REMOTES_OMITTED,
        ]
        .iter()
        .map(|d| d.name),
    );
    v.extend(
        CONNTRACK_COUNTERS
            .iter()
            .map(|d| d.name)
            .filter(|n| !v.contains(n))
            .collect::<Vec<_>>(),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_families_are_listed_once_and_include_the_default() {
        let all = namespaced_families();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len(), "a family listed twice");
        assert!(default_netns_families().iter().all(|f| all.contains(f)));
        // Every family of the namespaced sources: 10 conntrack counters, 13 netstat
        // counters, 9 of the conntrack breakdown, and 22 others.
        assert_eq!(all.len(), 54);
    }
}
