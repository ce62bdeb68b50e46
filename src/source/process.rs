//! The exporter's own `process_*` metrics, as every Prometheus client library serves
//! them, read from the real `/proc/self` (not `--path.procfs`, which may be the host's).

use crate::metrics;
use crate::procfs::pid::{parse_btime, parse_max_open_files, parse_stat};
use crate::procfs::{ProcError, ProcFile};
use crate::snapshot::Snapshot;
use crate::source::{Source, SourceError};

pub struct Process {
    stat: ProcFile,
    limits: ProcFile,
    ticks: f64,
    page_size: f64,
    boot_time: Option<f64>,
    size_is_count: bool,
}

impl Process {
    pub fn new() -> Self {
        let boot_time = crate::procfs::read(std::path::Path::new("/proc/stat"))
            .ok()
            .and_then(|b| parse_btime(&b))
            .map(|v| v as f64);
        Self {
            // Both single_open files: produced whole.
            stat: ProcFile::whole("/proc/self/stat"),
            limits: ProcFile::whole("/proc/self/limits"),
            ticks: crate::sys::clock_ticks_per_second() as f64,
            page_size: crate::sys::page_size() as f64,
            boot_time,
            size_is_count: crate::procfs::pid::size_is_count(std::path::Path::new("/proc")),
        }
    }
}

impl Default for Process {
    fn default() -> Self {
        Self::new()
    }
}

impl Source for Process {
    fn name(&self) -> &'static str {
        "process"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let parsed = self.stat.read_with(parse_stat)?;
        let st = parsed.ok_or_else(|| ProcError::parse(self.stat.path(), "unexpected format"))?;
        out.push(&metrics::PROCESS_CPU, &[], (st.utime + st.stime) as f64 / self.ticks);
        out.push(&metrics::PROCESS_RSS, &[], st.rss_pages as f64 * self.page_size);
        out.push(&metrics::PROCESS_VSIZE, &[], st.vsize as f64);
        if let Some(boot) = self.boot_time {
            out.push(&metrics::PROCESS_START, &[], boot + st.starttime as f64 / self.ticks);
        }
        if let Ok(n) = crate::procfs::pid::open_fds(std::path::Path::new("/proc/self/fd"), self.size_is_count) {
            out.push(&metrics::PROCESS_OPEN_FDS, &[], n as f64);
        }
        if let Some(max) = self.limits.read_with(parse_max_open_files)? {
            out.push(&metrics::PROCESS_MAX_FDS, &[], max as f64);
        }
        Ok(())
    }
}
