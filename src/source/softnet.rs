//! Input backlog drops and squeezes per CPU from `/proc/net/softnet_stat`, against
//! `netdev_max_backlog`. Both are global: the same in every namespace.

use crate::config::Config;
use crate::metrics;
use crate::procfs::net::{parse_softnet, SoftnetRow};
use crate::procfs::{ProcError, ProcFile};
use crate::snapshot::Snapshot;
use crate::source::{IndexLabels, Source, SourceError};

/// A served family and the row field it reads.
type Column = (&'static metrics::Desc, fn(&SoftnetRow) -> u64);

pub struct Softnet {
    stat: ProcFile,
    limit: ProcFile,
    rows: Vec<SoftnetRow>,
    per_cpu: bool,
    labels: IndexLabels,
}

impl Softnet {
    pub fn new(cfg: &Config) -> Self {
        Self {
            stat: ProcFile::new(cfg.roots.proc_net("softnet_stat")),
            limit: ProcFile::new(cfg.roots.proc("sys/net/core/netdev_max_backlog")),
            rows: Vec::new(),
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
        let path = self.stat.path().to_path_buf();
        parse_softnet(self.stat.read()?, &mut self.rows).map_err(|e| ProcError::parse(&path, e))?;
        let columns: [Column; 2] = [
            (&metrics::SOFTNET_DROPPED, |r| r.dropped),
            (&metrics::SOFTNET_SQUEEZED, |r| r.time_squeeze),
        ];
        for (desc, column) in columns {
            if self.per_cpu {
                for row in &self.rows {
                    out.push(desc, &[("cpu", self.labels.get(row.cpu as usize))], column(row) as f64);
                }
            } else {
                out.push(desc, &[], self.rows.iter().map(column).sum::<u64>() as f64);
            }
        }
        // netdev_max_backlog exists only in the initial namespace's /proc/sys.
        if let Some(v) = self.limit.read_u64_opt()? {
            out.push(&metrics::SOFTNET_BACKLOG_LIMIT, &[], v as f64);
        }
        Ok(())
    }
}
