//! Every metric family the exporter serves, declared once: name, type, help text, and
//! the family that carries its sliding-window peak. Names are a contract with the
//! dashboards and alerts; docs/metrics.md lists them with their labels.

use crate::model::CtCounter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
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
    counter("netpressure_conntrack_found_total", "Conntrack lookups that found an entry."),
    counter("netpressure_conntrack_invalid_total", "Packets conntrack could not track (invalid)."),
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
    counter("netpressure_conntrack_error_total", "Packets conntrack rejected as erroneous (ICMP errors included)."),
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
pub static SOURCE_ERRORS: Desc = counter(
    "netpressure_source_errors_total",
    "Samples of this source that failed.",
);
pub static SOURCE_DURATION: Desc = gauge(
    "netpressure_source_duration_seconds",
    "Time the last sample of this source took.",
);
pub static SAMPLES: Desc = counter("netpressure_samples_total", "Samples taken of this source.");
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
pub static PROCESS_RSS: Desc = gauge(
    "process_resident_memory_bytes",
    "Resident memory size in bytes.",
);
pub static PROCESS_VSIZE: Desc = gauge(
    "process_virtual_memory_bytes",
    "Virtual memory size in bytes.",
);
pub static PROCESS_OPEN_FDS: Desc = gauge("process_open_fds", "Number of open file descriptors.");
pub static PROCESS_MAX_FDS: Desc = gauge(
    "process_max_fds",
    "Maximum number of open file descriptors.",
);
pub static PROCESS_START: Desc = gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
);
