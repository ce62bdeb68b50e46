//! Input backlog drops and squeezes per CPU from `/proc/net/softnet_stat`, against
//! `netdev_max_backlog`. Both are global: the same in every namespace.

use crate::config::Config;
use crate::cputotals::CpuTotals;
use crate::metrics;
use crate::procfs::net::{parse_softnet, SoftnetRow};
use crate::procfs::{ProcError, ProcFile};
use crate::snapshot::Snapshot;
use crate::source::{IndexLabels, Source, SourceError};

pub struct Softnet {
    stat: ProcFile,
    limit: ProcFile,
    rows: Vec<SoftnetRow>,
    /// Wrap-aware totals of `dropped` and `time_squeeze` per CPU: the columns are 32-bit
    /// and a CPU that goes offline loses its row.
    totals: CpuTotals<2>,
    per_cpu: bool,
    labels: IndexLabels,
}

impl Softnet {
    pub fn new(cfg: &Config) -> Self {
        Self {
            stat: ProcFile::new(cfg.roots.proc_net("softnet_stat")),
            // A sysctl, produced whole; softnet_stat is a row per possible CPU, read to the end.
            limit: ProcFile::whole(cfg.roots.proc("sys/net/core/netdev_max_backlog")),
            rows: Vec::new(),
            totals: CpuTotals::new(),
            per_cpu: cfg.softnet_per_cpu,
            labels: IndexLabels::default(),
        }
    }
}

impl Source for Softnet {
    fn name(&self) -> &'static str {
        "softnet"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let rows = &mut self.rows;
        let parsed = self.stat.read_with(|b| parse_softnet(b, rows))?;
        parsed.map_err(|e| ProcError::parse(self.stat.path(), e))?;
        for row in &self.rows {
            self.totals
                .observe(row.cpu as usize, &[Some(row.dropped), Some(row.time_squeeze)]);
        }
        for (i, desc) in [&metrics::SOFTNET_DROPPED, &metrics::SOFTNET_SQUEEZED]
            .into_iter()
            .enumerate()
        {
            if self.per_cpu {
                for row in &self.rows {
                    if let Some(v) = self.totals.cpu_total(row.cpu as usize, i) {
                        out.push(desc, &[("cpu", self.labels.get(row.cpu as usize))], v as f64);
                    }
                }
            } else if let Some(v) = self.totals.total(i) {
                out.push(desc, &[], v as f64);
            }
        }
        // netdev_max_backlog exists only in the initial namespace's /proc/sys.
        if let Some(v) = self.limit.read_u64_opt()? {
            out.push(&metrics::SOFTNET_BACKLOG_LIMIT, &[], v as f64);
        }
        Ok(())
    }
}
