//! Conntrack table pressure of one network namespace.
//!
//! Primary path: ctnetlink GET_STATS (this namespace's entries, global max) every
//! sample, and GET_STATS_CPU (per-CPU counters) every `--sample.counter-interval` (other
//! namespaces: every `--netns.interval`). Fallback when ctnetlink is refused (no CAP_NET_ADMIN) or
//! missing: `nf_conntrack_count`, `nf_conntrack_max` and, where the kernel still builds
//! it, `/proc/net/stat/nf_conntrack`. The hash size and the TCP timeouts are the
//! namespace's settings (`settings.rs`), read every scan.

use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::cputotals::{CpuTotals, MAX_CPUS};
use crate::metrics;
use crate::model::{CtCounter, CtCpuStats, CtGlobalStats};
use crate::netlink::ctnetlink::Ctnetlink;
use crate::netlink::NetlinkError;
use crate::procfs::parse::cpu_list;
use crate::procfs::{conntrack::parse_stat, ProcError, ProcFile};
use crate::snapshot::Snapshot;
use crate::source::settings::Sysctl;
use crate::source::{Every, IndexLabels, NsContext, Source, SourceError, SourceStatus};

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
    stat: ProcFile,
    ctx: Arc<NsContext>,
    counters_every: Every,
    per_cpu: bool,
    /// The last reading, raw 32-bit values per CPU.
    cpus: Vec<CtCpuStats>,
    /// What is served: wrap-aware 64-bit totals of `cpus`.
    totals: CpuTotals<{ CtCounter::COUNT }>,
    /// `/sys/devices/system/cpu/possible`: row N of `/proc/net/stat/nf_conntrack` is the
    /// Nth possible CPU (the kernel skips impossible ones), not CPU N.
    possible: std::path::PathBuf,
    possible_cpus: Option<Vec<u16>>,
    cpu_labels: IndexLabels,
}

impl Conntrack {
    pub fn new(cfg: &Config, ctx: &Arc<NsContext>) -> Self {
        // Sysctls: produced whole. The stat file is a row per possible CPU, a record at a time.
        let nf = |name: &str| ProcFile::whole(cfg.roots.proc(&format!("sys/net/netfilter/{name}")));
        Self {
            netlink: Netlink::Closed,
            netlink_status: SourceStatus::default(),
            count: nf("nf_conntrack_count"),
            max: nf("nf_conntrack_max"),
            stat: ProcFile::new(cfg.roots.proc_net("stat/nf_conntrack")),
            ctx: Arc::clone(ctx),
            counters_every: Every::new(crate::cadence::Cadences::new(cfg).counters(ctx.scope)),
            // The node's namespace only: per CPU in every pod would be pods x possible
            // CPUs x counters (115,584 series at 301 namespaces and 128 possible CPUs,
            // an 11.8 MB scrape and some 100 MB of memory, tests/vm/node-shape.sh).
            per_cpu: cfg.conntrack_per_cpu && ctx.scope == crate::cadence::Scope::Own,
            cpus: Vec::new(),
            totals: CpuTotals::new(),
            possible: cfg.roots.sysfs.join("devices/system/cpu/possible"),
            possible_cpus: None,
            cpu_labels: IndexLabels::default(),
        }
    }

    /// This namespace's entries from the node pass (another namespace's, when the pass
    /// serves conntrack counts), with the global limit.
    fn read_pass(&self) -> Option<CtGlobalStats> {
        let (rec, max) = self.ctx.from_pass(crate::source::pass::Field::Conntrack)?;
        Some(CtGlobalStats {
            entries: Some(u64::from(rec.ct_count)),
            max_entries: max,
        })
    }

    /// GET_STATS unless the node pass gave `known`, and GET_STATS_CPU when the
    /// counters are due.
    fn via_netlink(&mut self, known: Option<CtGlobalStats>) -> Result<CtGlobalStats, NetlinkError> {
        let counters_due = self.counters_every.due(Instant::now());
        if let (Some(g), false) = (known, counters_due) {
            return Ok(g);
        }
        if matches!(self.netlink, Netlink::Closed) {
            match Ctnetlink::open() {
                Ok(nl) => self.netlink = Netlink::Open(nl),
                Err(e) => {
                    // Due again when the lane retries inside the namespace.
                    self.counters_every.reset();
                    return Err(e);
                }
            }
        }
        let Netlink::Open(nl) = &mut self.netlink else {
            return Err(NetlinkError::Kernel {
                request: "ctnetlink",
                errno: libc::EOPNOTSUPP,
            });
        };
        let global = match known.map_or_else(|| nl.stats(), Ok) {
            Ok(g) => g,
            Err(e) => {
                if counters_due {
                    self.counters_every.reset();
                }
                return Err(e);
            }
        };
        if counters_due {
            if let Err(e) = nl.stats_cpu(&mut self.cpus) {
                self.counters_every.reset();
                return Err(e);
            }
        }
        Ok(global)
    }

    fn via_procfs(&mut self) -> Result<CtGlobalStats, SourceError> {
        let entries = self.count.read_u64()?;
        let max_entries = self.max.read_u64_opt()?;
        if !self.counters_every.due(Instant::now()) {
            return Ok(CtGlobalStats {
                entries: Some(entries),
                max_entries,
            });
        }
        let cpus = &mut self.cpus;
        match self.stat.read_with(|bytes| parse_stat(bytes, cpus)) {
            Ok(parsed) => {
                parsed.map_err(|e| ProcError::parse(self.stat.path(), e.to_string()))?;
                if self.possible_cpus.is_none() {
                    // Without sysfs, rows are taken as CPUs 0..n (true wherever the
                    // possible CPUs are contiguous, as they nearly always are).
                    // Read once (it cannot change while the system runs), and not kept open.
                    self.possible_cpus = Some(
                        crate::procfs::read(&self.possible)
                            .ok()
                            .and_then(|b| cpu_list(&b, MAX_CPUS))
                            .unwrap_or_default(),
                    );
                }
                let possible = self.possible_cpus.as_deref().unwrap_or_default();
                renumber_rows(&mut self.cpus, possible);
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

/// Gives row N the number of the Nth possible CPU, where `possible` lists them.
fn renumber_rows(rows: &mut [CtCpuStats], possible: &[u16]) {
    if possible.len() < rows.len() {
        return;
    }
    for (row, cpu) in rows.iter_mut().zip(possible) {
        row.cpu = *cpu;
    }
}

impl Source for Conntrack {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let mut global = None;
        let from_pass = self.read_pass();
        if !matches!(self.netlink, Netlink::Refused) {
            let t = Instant::now();
            match self.via_netlink(from_pass) {
                Ok(g) => {
                    self.netlink_status.record(NETLINK_PATH, Ok(()), t.elapsed());
                    global = Some(g);
                }
                // Not a failure of ctnetlink: the sampler enters the namespace and retries.
                Err(e @ NetlinkError::NotEntered { .. }) => return Err(e.into()),
                Err(e) => {
                    let refused = e.is_permission_denied() || e.is_unsupported();
                    let err = SourceError::from(e);
                    self.netlink_status.record(NETLINK_PATH, Err(&err), t.elapsed());
                    self.netlink = if refused { Netlink::Refused } else { Netlink::Closed };
                    if refused && !self.netlink_status.quiet {
                        log::info!("conntrack: reading procfs instead of ctnetlink from now on");
                    }
                }
            }
        }
        let mut global = match global.or(from_pass) {
            Some(g) => g,
            None => self.via_procfs()?,
        };
        if global.max_entries.is_none() {
            global.max_entries = self.max.read_u64_opt()?;
        }

        self.ctx.set_conntrack_fill(global.entries.zip(global.max_entries));
        if let Some(v) = global.entries {
            out.push(&metrics::CONNTRACK_ENTRIES, &[], v as f64);
        }
        if let Some(v) = global.max_entries {
            out.push(&metrics::CONNTRACK_ENTRIES_LIMIT, &[], v as f64);
        }
        let settings = self.ctx.settings();
        if let Some(v) = settings.get(Sysctl::ConntrackBuckets) {
            out.push(&metrics::CONNTRACK_BUCKETS, &[], v as f64);
        }
        for (state, s) in [
            ("established", Sysctl::ConntrackTimeoutEstablished),
            ("close_wait", Sysctl::ConntrackTimeoutCloseWait),
            ("time_wait", Sysctl::ConntrackTimeoutTimeWait),
        ] {
            if let Some(v) = settings.get(s) {
                out.push(&metrics::CONNTRACK_TCP_TIMEOUT, &[("state", state)], v as f64);
            }
        }

        for row in &self.cpus {
            self.totals.observe(usize::from(row.cpu), &row.counters);
        }
        for c in CtCounter::ALL {
            let desc = metrics::conntrack_counter(c);
            if self.per_cpu {
                for i in 0..self.cpus.len() {
                    let cpu = usize::from(self.cpus[i].cpu);
                    if let Some(v) = self.totals.cpu_total(cpu, c.index()) {
                        out.push(desc, &[("cpu", self.cpu_labels.get(cpu))], v as f64);
                    }
                }
            } else if let Some(v) = self.totals.total(c.index()) {
                out.push(desc, &[], v as f64);
            }
        }
        Ok(())
    }

    fn set_quiet(&mut self) {
        self.netlink_status.quiet = true;
    }

    fn visit_status(&self, f: &mut dyn FnMut(&'static str, &SourceStatus)) {
        f(NETLINK_PATH, &self.netlink_status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfs_rows_are_numbered_by_possible_cpu() {
        let mut rows = vec![CtCpuStats::default(); 3];
        for (i, r) in rows.iter_mut().enumerate() {
            r.cpu = i as u16;
        }
        // Possible CPUs 0, 2 and 5: the kernel prints three rows, for those CPUs.
        renumber_rows(&mut rows, &[0, 2, 5]);
        assert_eq!(rows.iter().map(|r| r.cpu).collect::<Vec<_>>(), [0, 2, 5]);
        // A possible list shorter than the rows is not trusted.
        renumber_rows(&mut rows, &[7]);
        assert_eq!(rows.iter().map(|r| r.cpu).collect::<Vec<_>>(), [0, 2, 5]);
    }
}
