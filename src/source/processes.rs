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
//! The limit is read afresh at every scan, so a process that changes its own limit
//! (the Go runtime, the JVM and nginx raise their soft limit at start-up; a few lower
//! it) is ranked by its current limit at the next scan, at any age. It is read with
//! `prlimit(2)` (one system call, no text) where the kernel allows it: CAP_SYS_RESOURCE,
//! or a process of the exporter's own user, and only when `--path.procfs` is this PID
//! namespace's procfs, so that its PIDs are the ones `prlimit` means. Elsewhere it is
//! read from `/proc/PID/limits` (about 11 µs a process: the kernel formats sixteen
//! lines). A process refused once is read from the file for the rest of its life,
//! without asking `prlimit` again.
//!
//! A process that exits mid-scan is skipped silently. One that cannot be read
//! (permissions, `hidepid`) is counted in `netpressure_processes_unreadable`, never
//! logged one by one.
//!
//! Per pod, the fullest process against its own limit (`netpressure_pod_fd_usage_ratio`,
//! one series per pod and no PID): a process's pod comes from its cgroup path (the pod
//! UID, `crate::pods`), cached by PID and `/proc/PID` inode and read again once in
//! `POD_REREAD_SCANS` scans (a process can be moved to another pod's cgroup), and
//! the pod's name from the kubelet's log directories, listed again when a scan finds a
//! pod UID the last listing did not name. A process outside any pod, or a pod without its log directory, is counted in
//! no pod: never a wrong one.

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
use crate::source::{top_k, Source, SourceError};

#[derive(Debug, Clone, Copy)]
struct Entry {
    pid: u32,
    /// The inode of `/proc/PID` when it was scanned: a reused PID has another.
    ino: u64,
    open: u64,
    limit: u64,
}

impl Entry {
    fn fill(&self) -> f64 {
        self.open as f64 / self.limit.max(1) as f64
    }
}

/// How many scans a process found in no pod waits before its cgroup is read again: a
/// container's first process is briefly outside its pod's cgroup (the runtime's init
/// moves itself in, then execs the container's command under the same PID).
const NO_POD_REREAD_SCANS: u64 = 12;

/// A process in a pod has its cgroup read again once in this many scans (30 s at the
/// default `--scan.interval`), each at a scan of its own (by PID), not all at once: a
/// process moved to another pod's cgroup is counted in the new pod from then on.
const POD_REREAD_SCANS: u64 = 6;

#[derive(Debug)]
struct PodOf {
    ino: u64,
    uid: Option<std::sync::Arc<str>>,
    seen: u64,
    read: u64,
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
    /// `--path.procfs` is this PID namespace's procfs: its PIDs are ours to prlimit.
    own_pids: bool,
    /// Processes (PID and inode of `/proc/PID`, which a reused PID does not share)
    /// whose limit prlimit refused, with the scan that last saw them.
    refused: HashMap<u32, (u64, u64)>,
    scans: u64,
    /// `--path.pod-logs`.
    pod_logs: PathBuf,
    /// Each process's pod UID (`None`: in no pod), by PID, with the inode of `/proc/PID`,
    /// the scan that last saw it and the scan that read its cgroup.
    pod_of: HashMap<u32, PodOf>,
    /// Pods by UID, from the last listing of `--path.pod-logs`.
    pods: HashMap<String, crate::pods::Pod>,
    /// The fullest process per pod UID in the last scan: (open/limit).
    worst: HashMap<std::sync::Arc<str>, f64>,
}

impl Processes {
    pub fn new(cfg: &Config) -> Self {
        let root = cfg.roots.procfs.clone();
        let size_is_count = crate::procfs::pid::size_is_count(&root);
        let own_pids =
            fs::read_link(root.join("self")).is_ok_and(|p| p.as_os_str() == std::process::id().to_string().as_str());
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
            own_pids,
            refused: HashMap::new(),
            scans: 0,
            pod_logs: cfg.pod_logs.clone(),
            pod_of: HashMap::new(),
            pods: HashMap::new(),
            worst: HashMap::new(),
        }
    }

    /// The pod UID of `pid` (whose `/proc/PID` has inode `ino`): from the cache, or read
    /// from `/proc/PID/cgroup` when the process is new, once in [`POD_REREAD_SCANS`] while
    /// it is in a pod, and every [`NO_POD_REREAD_SCANS`] while it is in none.
    fn pod(&mut self, pid: u32, ino: u64) -> Option<std::sync::Arc<str>> {
        let scan = self.scans;
        if let Some(p) = self.pod_of.get_mut(&pid) {
            let fresh = match p.uid {
                Some(_) => scan == p.read || !(scan + u64::from(pid)).is_multiple_of(POD_REREAD_SCANS),
                None => scan - p.read < NO_POD_REREAD_SCANS,
            };
            if p.ino == ino && fresh {
                p.seen = scan;
                return p.uid.clone();
            }
        }
        let uid = match self.read_file(pid, "cgroup") {
            Read::Ok(()) => std::str::from_utf8(&self.buf)
                .ok()
                .and_then(crate::pods::pod_uid)
                .map(std::sync::Arc::<str>::from),
            Read::Gone | Read::Denied => None,
        };
        let entry = PodOf {
            ino,
            uid: uid.clone(),
            seen: scan,
            read: scan,
        };
        self.pod_of.insert(pid, entry);
        uid
    }

    fn set_path(&mut self, pid: u32, file: &str) {
        self.path.clear();
        self.path.push(&self.root);
        self.path.push(pid.to_string());
        self.path.push(file);
    }

    fn open_fds(&mut self, pid: u32) -> Read<u64> {
        self.set_path(pid, "fd");
        classify(crate::procfs::pid::open_fds(&self.path, self.size_is_count))
    }

    fn read_file(&mut self, pid: u32, file: &str) -> Read<()> {
        self.set_path(pid, file);
        classify(crate::procfs::read_into(&self.path, &mut self.buf))
    }

    /// The current soft RLIMIT_NOFILE of `pid` (whose `/proc/PID` has inode `ino`).
    fn limit(&mut self, pid: u32, ino: u64) -> Read<Option<u64>> {
        let refused = self.refused.get_mut(&pid).filter(|(i, _)| *i == ino);
        if self.own_pids && refused.is_none() {
            match crate::sys::nofile_soft_limit(pid) {
                Ok(limit) => return Read::Ok(Some(limit)),
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    self.refused.insert(pid, (ino, self.scans));
                }
                Err(_) => return Read::Gone,
            }
        } else if let Some((_, seen)) = refused {
            *seen = self.scans;
        }
        match self.read_file(pid, "limits") {
            Read::Ok(()) => Read::Ok(parse_max_open_files(&self.buf)),
            Read::Gone => Read::Gone,
            Read::Denied => Read::Denied,
        }
    }

    /// Reads limits from `/proc/PID/limits` only, as without CAP_SYS_RESOURCE for
    /// processes of other users (for benchmarks).
    #[doc(hidden)]
    pub fn without_prlimit(mut self) -> Self {
        self.own_pids = false;
        self
    }

    /// One full scan: every process's open descriptors and limit.
    ///
    /// # Errors
    /// The procfs root cannot be listed.
    pub fn scan(&mut self) -> Result<(), SourceError> {
        self.scans += 1;
        self.entries.clear();
        self.worst.clear();
        self.unreadable = 0;
        let dir = fs::read_dir(&self.root).map_err(|source| SourceError::Io {
            what: self.root.display().to_string(),
            source,
        })?;
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
            let limit = match self.limit(pid, ino) {
                Read::Ok(Some(limit)) => limit,
                // "unlimited" cannot be set for RLIMIT_NOFILE; skip anything unparsable.
                Read::Ok(None) | Read::Gone => continue,
                Read::Denied => {
                    self.unreadable += 1;
                    continue;
                }
            };
            self.entries.push(Entry { pid, ino, open, limit });
            if let Some(uid) = self.pod(pid, ino) {
                let fill = open as f64 / limit.max(1) as f64;
                let w = self.worst.entry(uid).or_insert(0.0);
                *w = w.max(fill);
            }
        }
        let scan = self.scans;
        self.refused.retain(|_, (_, seen)| *seen == scan);
        self.pod_of.retain(|_, p| p.seen == scan);
        // A pod UID the last listing did not have: list the pods again (once a scan).
        if self.worst.keys().any(|uid| !self.pods.contains_key(&**uid)) {
            self.pods = crate::pods::index(&self.pod_logs);
        }
        self.scanned = self.entries.len();
        top_k(&mut self.entries, self.top, |a, b| {
            b.fill()
                .partial_cmp(&a.fill())
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.pid.cmp(&b.pid))
        });
        Ok(())
    }
}

impl Source for Processes {
    fn name(&self) -> &'static str {
        "processes"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        self.scan()?;
        self.emit(out);
        Ok(())
    }
}

impl Processes {
    /// Serves the last scan's top processes, each with its command name. The name is
    /// read after the scan, so the process may have exited and its PID gone to
    /// another: `/proc/PID` must still be the directory scanned (same inode) after the
    /// name is read, or the process is left out rather than named after a stranger.
    pub fn emit(&mut self, out: &mut Snapshot) {
        use std::os::unix::fs::MetadataExt as _;
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            let comm = match self.read_file(e.pid, "comm") {
                Read::Ok(()) => String::from_utf8_lossy(self.buf.trim_ascii_end()).into_owned(),
                Read::Gone | Read::Denied => continue,
            };
            self.path.pop();
            if fs::metadata(&self.path).map(|m| m.ino()).ok() != Some(e.ino) {
                continue;
            }
            self.pid_buf.clear();
            let _ = write!(self.pid_buf, "{}", e.pid);
            let labels = [("pid", self.pid_buf.as_str()), ("comm", comm.as_str())];
            out.push(&metrics::PROCESS_OPEN_FDS_TOP, &labels, e.open as f64);
            out.push(&metrics::PROCESS_FD_LIMIT_TOP, &labels, e.limit as f64);
        }
        // By name: two UIDs of one pod name (a StatefulSet's pod replaced while the old
        // one's processes linger) are one series, the fuller.
        let mut by_name: Vec<(&str, &str, f64)> = self
            .worst
            .iter()
            .filter_map(|(uid, fill)| {
                self.pods
                    .get(&**uid)
                    .map(|p| (p.namespace.as_str(), p.name.as_str(), *fill))
            })
            .collect();
        by_name.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(b.2.total_cmp(&a.2)));
        by_name.dedup_by(|b, a| (a.0, a.1) == (b.0, b.1));
        for (namespace, pod, fill) in by_name {
            out.push(&metrics::POD_FD_USAGE, &[("namespace", namespace), ("pod", pod)], fill);
        }
        out.push(&metrics::PROCESSES_SCANNED, &[], self.scanned as f64);
        out.push(&metrics::PROCESSES_UNREADABLE, &[], self.unreadable as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A procfs root with one process, `pid`, named `comm`, with 3 descriptors open
    /// of a soft limit of 4 (as /proc/PID/limits prints it).
    fn fake_process(root: &std::path::Path, pid: u32, comm: &str) {
        let dir = root.join(pid.to_string());
        fs::create_dir_all(dir.join("fd")).unwrap();
        for fd in 0..3 {
            fs::write(dir.join("fd").join(fd.to_string()), "").unwrap();
        }
        fs::write(
            dir.join("limits"),
            "Limit                     Soft Limit           Hard Limit           Units     \n\
             Max open files            4                    4096                 files     \n",
        )
        .unwrap();
        fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
    }

    #[test]
    fn a_pid_reused_between_the_scan_and_the_name_is_left_out() {
        let root = std::env::temp_dir().join(format!("np-procs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fake_process(&root, 4242, "database");
        let mut cfg = Config::default();
        cfg.roots.procfs = root.clone();
        let mut p = Processes::new(&cfg);
        p.scan().unwrap();
        assert_eq!(p.entries.len(), 1);
        // The scanned process is still there: served under its name.
        let mut out = Snapshot::new();
        p.emit(&mut out);
        let mut text = String::new();
        out.encode(&mut text);
        assert!(
            text.contains(r#"netpressure_process_open_fds{pid="4242",comm="database"} 3"#),
            "{text}"
        );
        // It exits and its PID goes to another process before the name is read.
        // (Made beside it first, so that it cannot get the inode just freed.)
        fake_process(&root, 4343, "impostor");
        fs::remove_dir_all(root.join("4242")).unwrap();
        fs::rename(root.join("4343"), root.join("4242")).unwrap();
        let mut out = Snapshot::new();
        p.emit(&mut out);
        let mut text = String::new();
        out.encode(&mut text);
        assert!(!text.contains("netpressure_process_open_fds{"), "{text}");
        let _ = fs::remove_dir_all(&root);
    }
}
