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
}

impl Process {
    pub fn new() -> Self {
        let boot_time = crate::procfs::read(std::path::Path::new("/proc/stat"))
            .ok()
            .and_then(|b| parse_btime(&b))
            .map(|v| v as f64);
        Self {
            stat: ProcFile::new("/proc/self/stat"),
            limits: ProcFile::new("/proc/self/limits"),
            ticks: crate::sys::clock_ticks_per_second() as f64,
            page_size: crate::sys::page_size() as f64,
            boot_time,
        }
    }
}

impl Default for Process {
    fn default() -> Self {
        Self::new()
    }
}

/// Open descriptors of this process. Linux ≥ 6.2 reports the count as the size of
/// `/proc/self/fd`; older kernels report 0, and then the entries are counted.
fn open_fds() -> Option<u64> {
    let size = std::fs::metadata("/proc/self/fd").ok()?.len();
    if size > 0 {
        return Some(size);
    }
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

impl Source for Process {
    fn name(&self) -> &'static str {
        "process"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let path = self.stat.path().to_path_buf();
        let st = parse_stat(self.stat.read()?).ok_or_else(|| ProcError::parse(&path, "unexpected format"))?;
        out.push(&metrics::PROCESS_CPU, &[], (st.utime + st.stime) as f64 / self.ticks);
        out.push(&metrics::PROCESS_RSS, &[], st.rss_pages as f64 * self.page_size);
        out.push(&metrics::PROCESS_VSIZE, &[], st.vsize as f64);
        if let Some(boot) = self.boot_time {
            out.push(&metrics::PROCESS_START, &[], boot + st.starttime as f64 / self.ticks);
        }
        if let Some(n) = open_fds() {
            out.push(&metrics::PROCESS_OPEN_FDS, &[], n as f64);
        }
        if let Some(max) = parse_max_open_files(self.limits.read()?) {
            out.push(&metrics::PROCESS_MAX_FDS, &[], max as f64);
        }
        Ok(())
    }
}
