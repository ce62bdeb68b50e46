//! System-wide file handles, every sample: `/proc/sys/fs/file-nr` (allocated, free,
//! max), and `fs.nr_open`, the ceiling of any process's RLIMIT_NOFILE.

use crate::config::Config;
use crate::metrics;
use crate::procfs::parse::{fields, parse_dec};
use crate::procfs::{ProcError, ProcFile};
use crate::snapshot::Snapshot;
use crate::source::{Source, SourceError};

/// Parses `file-nr`: "allocated free max" (free is always 0 since 2.6).
pub fn parse_file_nr(bytes: &[u8]) -> Option<(u64, u64)> {
    let mut f = fields(bytes);
    let allocated = parse_dec(f.next()?)?;
    let _free = f.next()?;
    let max = parse_dec(f.next()?)?;
    Some((allocated, max))
}

pub struct FileFd {
    file_nr: ProcFile,
    nr_open: ProcFile,
}

impl FileFd {
    pub fn new(cfg: &Config) -> Self {
        Self {
            // Sysctls: produced whole.
            file_nr: ProcFile::whole(cfg.roots.proc("sys/fs/file-nr")),
            nr_open: ProcFile::whole(cfg.roots.proc("sys/fs/nr_open")),
        }
    }
}

impl Source for FileFd {
    fn name(&self) -> &'static str {
        "filefd"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let parsed = self.file_nr.read_with(parse_file_nr)?;
        let (allocated, max) =
            parsed.ok_or_else(|| ProcError::parse(self.file_nr.path(), "expected \"allocated free max\""))?;
        out.push(&metrics::FD_ALLOCATED, &[], allocated as f64);
        out.push(&metrics::FD_LIMIT, &[], max as f64);
        if let Some(v) = self.nr_open.read_u64_opt()? {
            out.push(&metrics::FD_PROCESS_CEILING, &[], v as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_nr() {
        // Captured on the development machine (Linux 6.18.44): `cat /proc/sys/fs/file-nr`.
        assert_eq!(parse_file_nr(b"448\t0\t2466193\n"), Some((448, 2_466_193)));
        assert_eq!(parse_file_nr(b"448 0"), None);
        assert_eq!(parse_file_nr(b""), None);
    }
}
