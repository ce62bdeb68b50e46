//! Conntrack table pressure for the exporter's own network namespace.
//!
//! Primary path: ctnetlink GET_STATS (this namespace's entries, global max) and
//! GET_STATS_CPU (per-CPU counters). Fallback when ctnetlink is refused (no
//! CAP_NET_ADMIN) or missing: `nf_conntrack_count`, `nf_conntrack_max` and, where the
//! kernel still builds it, `/proc/net/stat/nf_conntrack`. The hash size and the TCP
//! timeouts always come from `/proc/sys/net/netfilter`.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::metrics;
use crate::model::{CtCounter, CtCpuStats, CtGlobalStats};
use crate::netlink::ctnetlink::Ctnetlink;
use crate::netlink::NetlinkError;
use crate::procfs::{conntrack::parse_stat, ProcError, ProcFile};
use crate::snapshot::Snapshot;
use crate::source::{Every, IndexLabels, Source, SourceError, SourceStatus};

/// The name of the ctnetlink path in `netpressure_source_*{source=...}`.
pub const NETLINK_PATH: &str = "conntrack_netlink";

enum Netlink {
    /// Not opened yet, or closed after a transient failure: open on the next sample.
    Closed,
    Open(Ctnetlink),
    /// The kernel refused (EPERM) or lacks ctnetlink: use procfs from now on.
    Refused,
}

pub struct Conntrack {
    netlink: Netlink,
    netlink_status: SourceStatus,
    count: ProcFile,
    max: ProcFile,
    buckets: ProcFile,
    stat: ProcFile,
    timeouts: [(&'static str, ProcFile); 3],
    settings_every: Every,
    buckets_value: Option<u64>,
    timeout_values: [Option<u64>; 3],
    per_cpu: bool,
    cpus: Vec<CtCpuStats>,
    cpu_labels: IndexLabels,
}

impl Conntrack {
    pub fn new(cfg: &Config) -> Self {
        let nf = |name: &str| ProcFile::new(cfg.roots.proc(&format!("sys/net/netfilter/{name}")));
        Self {
            netlink: Netlink::Closed,
            netlink_status: SourceStatus::default(),
            count: nf("nf_conntrack_count"),
            max: nf("nf_conntrack_max"),
            buckets: nf("nf_conntrack_buckets"),
            stat: ProcFile::new(cfg.roots.proc_net("stat/nf_conntrack")),
            timeouts: [
                ("established", nf("nf_conntrack_tcp_timeout_established")),
                ("close_wait", nf("nf_conntrack_tcp_timeout_close_wait")),
                ("time_wait", nf("nf_conntrack_tcp_timeout_time_wait")),
            ],
            settings_every: Every::new(Duration::from_secs(1)),
            buckets_value: None,
            timeout_values: [None; 3],
            per_cpu: cfg.conntrack_per_cpu,
            cpus: Vec::new(),
            cpu_labels: IndexLabels::default(),
        }
    }

    fn via_netlink(&mut self) -> Result<CtGlobalStats, NetlinkError> {
        if matches!(self.netlink, Netlink::Closed) {
            self.netlink = Netlink::Open(Ctnetlink::open()?);
        }
        let Netlink::Open(nl) = &mut self.netlink else {
            return Err(NetlinkError::Kernel {
                request: "ctnetlink",
                errno: libc::EOPNOTSUPP,
            });
        };
        let global = nl.stats()?;
        nl.stats_cpu(&mut self.cpus)?;
        Ok(global)
    }

    fn via_procfs(&mut self) -> Result<CtGlobalStats, SourceError> {
        let entries = self.count.read_u64()?;
        let max_entries = self.max.read_u64_opt()?;
        match self.stat.read() {
            Ok(bytes) => {
                parse_stat(bytes, &mut self.cpus).map_err(|e| ProcError::parse(self.stat.path(), e.to_string()))?;
            }
            // Many kernels since ≈5.15 no longer build this file: counters are then absent.
            Err(e) if e.is_not_found() => self.cpus.clear(),
            Err(e) => return Err(e.into()),
        }
        Ok(CtGlobalStats {
            entries: Some(entries),
            max_entries,
        })
    }
}

impl Source for Conntrack {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let mut global = None;
        if !matches!(self.netlink, Netlink::Refused) {
            let t = Instant::now();
            match self.via_netlink() {
                Ok(g) => {
                    self.netlink_status.record(NETLINK_PATH, Ok(()), t.elapsed());
                    global = Some(g);
                }
                Err(e) => {
                    let refused = e.is_permission_denied() || e.is_unsupported();
                    let err = SourceError::from(e);
                    self.netlink_status.record(NETLINK_PATH, Err(&err), t.elapsed());
                    self.netlink = if refused { Netlink::Refused } else { Netlink::Closed };
                    if refused {
                        log::info!("conntrack: reading procfs instead of ctnetlink from now on");
                    }
                }
            }
        }
        let mut global = match global {
            Some(g) => g,
            None => self.via_procfs()?,
        };
        if global.max_entries.is_none() {
            global.max_entries = self.max.read_u64_opt()?;
        }

        if let Some(v) = global.entries {
            out.push(&metrics::CONNTRACK_ENTRIES, &[], v as f64);
        }
        if let Some(v) = global.max_entries {
            out.push(&metrics::CONNTRACK_ENTRIES_LIMIT, &[], v as f64);
        }
        // Hash size and timeouts are settings: re-read once a second, not every tick.
        if self.settings_every.due(Instant::now()) {
            self.buckets_value = self.buckets.read_u64_opt()?;
            for ((_, file), value) in self.timeouts.iter_mut().zip(&mut self.timeout_values) {
                *value = file.read_u64_opt()?;
            }
        }
        if let Some(v) = self.buckets_value {
            out.push(&metrics::CONNTRACK_BUCKETS, &[], v as f64);
        }
        for ((state, _), value) in self.timeouts.iter().zip(self.timeout_values) {
            if let Some(v) = value {
                out.push(&metrics::CONNTRACK_TCP_TIMEOUT, &[("state", state)], v as f64);
            }
        }

        for c in CtCounter::ALL {
            let desc = metrics::conntrack_counter(c);
            if self.per_cpu {
                for i in 0..self.cpus.len() {
                    let row = self.cpus[i];
                    if let Some(v) = row.get(c) {
                        let label = self.cpu_labels.get(usize::from(row.cpu));
                        out.push(desc, &[("cpu", label)], v as f64);
                    }
                }
            } else {
                let mut sum: Option<u64> = None;
                for row in &self.cpus {
                    if let Some(v) = row.get(c) {
                        sum = Some(sum.unwrap_or(0).wrapping_add(v));
                    }
                }
                if let Some(v) = sum {
                    out.push(desc, &[], v as f64);
                }
            }
        }
        Ok(())
    }

    fn visit_status(&self, f: &mut dyn FnMut(&'static str, &SourceStatus)) {
        f(NETLINK_PATH, &self.netlink_status);
    }
}
