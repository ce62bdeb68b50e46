//! The processes nearest their file-descriptor limit, every `--scan.interval`.
//!
//! For every process under `--path.procfs`: its open descriptors and its soft
//! RLIMIT_NOFILE (`/proc/PID/limits`). Linux ≥ 6.2 reports the number of open
//! descriptors as the size of `/proc/PID/fd` (O(1), and readable without
//! CAP_SYS_PTRACE); older kernels report 0 there, and the entries are counted instead,
//! which needs CAP_SYS_PTRACE for other users' processes. Only the top
//! `--collector.processes.top` by open/limit are served, so `pid` labels stay bounded; a
//! process that leaves the top-K, or exits, drops its series at the next scan.
//!
//! Reading `/proc/PID/limits` is most of a scan's cost (about 11 µs a process, the kernel
//! formats 16 lines), so each process's limit is cached, keyed by PID and the inode of
//! `/proc/PID` (which a new process with a reused PID does not share), and re-read once
//! every [`REFRESH_SCANS`] scans (spread over the scans by PID, so that no scan re-reads
//! them all), or at every scan once the process holds half its cached limit:
//! a process that raises its own limit after start is never reported against the old one
//! for long, and never when it matters.
//!
//! A process that exits mid-scan is skipped silently. One that cannot be read
//! (permissions, `hidepid`) is counted in `netpressure_processes_unreadable`, never
//! logged one by one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::DirEntryExt;
use std::path::PathBuf;

use crate::config::Config;
use crate::metrics;
use crate::procfs::pid::parse_max_open_files;
use crate::snapshot::Snapshot;
use crate::source::{Source, SourceError};

/// Scans after which a cached limit is read again.
pub const REFRESH_SCANS: u64 = 12;

#[derive(Debug, Clone, Copy)]
struct CachedLimit {
    ino: u64,
    limit: u64,
    seen_at_scan: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    pid: u32,
    open: u64,
    limit: u64,
}

impl Entry {
    fn fill(&self) -> f64 {
        self.open as f64 / self.limit.max(1) as f64
    }
}

enum Read<T> {
    Ok(T),
    /// The process is gone.
    Gone,
    /// Not allowed.
    Denied,
}

fn classify<T>(r: io::Result<T>) -> Read<T> {
    match r {
        Ok(v) => Read::Ok(v),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Read::Denied,
        // ENOENT, ESRCH: exited; anything else on a vanishing process is the same race.
        Err(_) => Read::Gone,
    }
}

pub struct Processes {
    root: PathBuf,
    top: usize,
    /// Whether `/proc/PID/fd` reports the descriptor count as its size (Linux ≥ 6.2).
    size_is_count: bool,
    path: PathBuf,
    buf: Vec<u8>,
    entries: Vec<Entry>,
    unreadable: u64,
    scanned: usize,
    pid_buf: String,
    limits: HashMap<u32, CachedLimit>,
    scans: u64,
}

impl Processes {
    pub fn new(cfg: &Config) -> Self {
        let root = cfg.roots.procfs.clone();
        // The exporter always has descriptors open, so a size of 0 means "not supported".
        let size_is_count = fs::metadata(root.join("self/fd")).is_ok_and(|m| m.len() > 0);
        Self {
            root,
            top: cfg.processes_top,
            size_is_count,
            path: PathBuf::new(),
            buf: Vec::with_capacity(2048),
            entries: Vec::new(),
            unreadable: 0,
            scanned: 0,
            pid_buf: String::new(),
            limits: HashMap::new(),
            scans: 0,
        }
    }

    fn set_path(&mut self, pid: u32, file: &str) {
        self.path.clear();
        self.path.push(&self.root);
        self.path.push(pid.to_string());
        self.path.push(file);
    }

    fn open_fds(&mut self, pid: u32) -> Read<u64> {
        self.set_path(pid, "fd");
        if self.size_is_count {
            return classify(fs::metadata(&self.path).map(|m| m.len()));
        }
        classify(fs::read_dir(&self.path).map(|d| d.count() as u64))
    }

    fn read_file(&mut self, pid: u32, file: &str) -> Read<()> {
        use std::io::Read as _;
        self.set_path(pid, file);
        self.buf.clear();
        classify(
            fs::File::open(&self.path)
                .and_then(|mut f| f.read_to_end(&mut self.buf))
                .map(|_| ()),
        )
    }

    /// One full scan: every process's open descriptors and limit.
    ///
    /// # Errors
    /// The procfs root cannot be listed.
    pub fn scan(&mut self) -> Result<(), SourceError> {
        self.scans += 1;
        self.entries.clear();
        self.unreadable = 0;
        let dir = fs::read_dir(&self.root).map_err(|e| SourceError::Other(format!("{}: {e}", self.root.display())))?;
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let open = match self.open_fds(pid) {
                Read::Ok(0) => continue, // kernel threads and processes with nothing open
                Read::Ok(n) => n,
                Read::Gone => continue,
                Read::Denied => {
                    self.unreadable += 1;
                    continue;
                }
            };
            let ino = entry.ino();
            let limit = match self.limits.get_mut(&pid) {
                Some(c) if c.ino == ino && (self.scans + u64::from(pid)) % REFRESH_SCANS != 0 && open * 2 < c.limit => {
                    c.seen_at_scan = self.scans;
                    c.limit
                }
                _ => {
                    match self.read_file(pid, "limits") {
                        Read::Ok(()) => {}
                        Read::Gone => continue,
                        Read::Denied => {
                            self.unreadable += 1;
                            continue;
                        }
                    }
                    // "unlimited" cannot be set for RLIMIT_NOFILE; skip anything unparsable.
                    let Some(limit) = parse_max_open_files(&self.buf) else {
                        continue;
                    };
                    let scan = self.scans;
                    self.limits.insert(
                        pid,
                        CachedLimit {
                            ino,
                            limit,
                            seen_at_scan: scan,
                        },
                    );
                    limit
                }
            };
            self.entries.push(Entry { pid, open, limit });
        }
        let scan = self.scans;
        self.limits.retain(|_, c| c.seen_at_scan == scan);
        let by_fill = |a: &Entry, b: &Entry| {
            b.fill()
                .partial_cmp(&a.fill())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.pid.cmp(&b.pid))
        };
        if self.entries.len() > self.top {
            self.entries.select_nth_unstable_by(self.top, by_fill);
        }
        let scanned = self.entries.len();
        self.entries.truncate(self.top);
        self.entries.sort_unstable_by(by_fill);
        self.scanned = scanned;
        Ok(())
    }
}

impl Source for Processes {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        self.scan()?;
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            // The command name is read for the few served processes only.
            let comm = match self.read_file(e.pid, "comm") {
                Read::Ok(()) => String::from_utf8_lossy(self.buf.trim_ascii_end()).into_owned(),
                Read::Gone | Read::Denied => continue,
            };
            self.pid_buf.clear();
            let _ = write!(self.pid_buf, "{}", e.pid);
            let labels = [("pid", self.pid_buf.as_str()), ("comm", comm.as_str())];
            out.push(&metrics::PROCESS_OPEN_FDS_TOP, &labels, e.open as f64);
            out.push(&metrics::PROCESS_FD_LIMIT_TOP, &labels, e.limit as f64);
        }
        out.push(&metrics::PROCESSES_SCANNED, &[], self.scanned as f64);
        out.push(&metrics::PROCESSES_UNREADABLE, &[], self.unreadable as f64);
        Ok(())
    }
}
