//! The only place that opens files under `/proc`. Files are opened once and re-read with
//! `pread` into a buffer that is reused, so a steady-state sample allocates nothing.
//! Parsers live beside the reader as pure functions over bytes.

pub mod conntrack;
pub mod net;
pub mod parse;
pub mod pid;

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The most any proc or sys file is read to: far above the largest file read here
/// (`softnet_stat` of 8,192 CPUs is about 1.2 MiB; `mountinfo` of a busy node a few
/// hundred KiB), so that a wrong root pointing at an endless file (`/dev/zero`) costs
/// one bounded read and an error, not the node's memory.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// Opens a file to read without ever blocking: non-blocking (a FIFO opens at once and
/// reads as empty), and refused unless it is a regular file, as every proc and sys file
/// is (a device, FIFO or socket under a wrong root is an error, not a read that hangs).
///
/// # Errors
/// The open's error, or `InvalidInput` for a file that is not regular.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(f)
}

/// Reads a whole proc or sys file into `buf` (cleared first), opened with
/// [`open_regular`] and read to at most [`MAX_FILE_BYTES`].
///
/// # Errors
/// As [`open_regular`], the read's error, or `FileTooLarge` past the bound.
pub fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    read_all_at(&open_regular(path)?, buf)
}

/// [`read_into`] a new buffer.
///
/// # Errors
/// As [`read_into`].
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_into(path, &mut buf)?;
    Ok(buf)
}

/// A failure to read a proc or sys file, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file does not exist: the kernel does not have this feature (or the path root
    /// is wrong). Not worth a warning.
    #[error("{0}: not present")]
    NotFound(PathBuf),
    /// The file exists but may not be read.
    #[error("{0}: permission denied")]
    PermissionDenied(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    /// The file must be opened inside its network namespace, which the thread has not
    /// entered (see [`crate::netns::without_entering`]).
    #[error("{0}: not opened yet, and this thread is outside its namespace")]
    NotEntered(PathBuf),
}

impl ProcError {
    fn from_io(path: &Path, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::NotFound => Self::NotFound(path.to_path_buf()),
            io::ErrorKind::PermissionDenied => Self::PermissionDenied(path.to_path_buf()),
            _ => Self::Io {
                path: path.to_path_buf(),
                source: e,
            },
        }
    }

    pub fn io(path: &Path, e: io::Error) -> Self {
        Self::from_io(path, e)
    }

    pub fn parse(path: &Path, detail: impl Into<String>) -> Self {
        Self::Parse {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }
}

/// One file under a proc or sys root, kept open between samples.
///
/// The descriptor is opened on first use and dropped after an I/O error, so a file that
/// appears later (a module loaded after start-up) is picked up on a later read.
///
/// The bytes are read into one buffer per thread, not one per file: a node with 250 pods
/// holds about a thousand of these files open, and a buffer each (sized for the file plus
/// the end-of-file spare) came to about 23 KiB of resident memory per namespace.
#[derive(Debug)]
pub struct ProcFile {
    path: PathBuf,
    file: Option<File>,
}

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl ProcFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole file from offset 0 and hands its bytes to `f` (which must not read
    /// another `ProcFile`: the buffer is the thread's).
    ///
    /// # Errors
    /// [`ProcError::NotFound`] when the file does not exist, otherwise the I/O error.
    pub fn read_with<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ProcError> {
        if self.file.is_none() {
            if !crate::netns::may_open() {
                return Err(ProcError::NotEntered(self.path.clone()));
            }
            let f = open_regular(&self.path).map_err(|e| ProcError::from_io(&self.path, e))?;
            self.file = Some(f);
        }
        let Some(file) = self.file.as_ref() else {
            return Err(ProcError::NotFound(self.path.clone()));
        };
        let read = READ_BUF.with_borrow_mut(|buf| {
            let r = read_all_at(file, buf).map(|()| f(buf));
            // One outsized file (or a file refused at MAX_FILE_BYTES) must not keep its
            // buffer for the life of the thread.
            if buf.capacity() > KEEP_BUFFER_BYTES {
                *buf = Vec::new();
            }
            r
        });
        read.map_err(|e| {
            self.file = None;
            ProcError::from_io(&self.path, e)
        })
    }

    /// Reads a file that holds one unsigned integer (a sysctl such as `nf_conntrack_max`).
    ///
    /// # Errors
    /// As [`ProcFile::read_with`], or [`ProcError::Parse`] when the content is not a number.
    pub fn read_u64(&mut self) -> Result<u64, ProcError> {
        let parsed = self.read_with(parse::single_u64)?;
        parsed.ok_or_else(|| ProcError::parse(&self.path, "not an unsigned integer"))
    }

    /// Like [`ProcFile::read_u64`], but a missing file is `Ok(None)`.
    ///
    /// # Errors
    /// Any error but [`ProcError::NotFound`].
    pub fn read_u64_opt(&mut self) -> Result<Option<u64>, ProcError> {
        match self.read_u64() {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Room kept free past the end of what a read asks for. A proc file is produced whole
/// (`single_open`) or a record at a time, each record far smaller than this; a sysctl,
/// a sysfs attribute and a regular file come whole. So a read that leaves this much of
/// its buffer unfilled has reached the end of the file, and the read that would return
/// 0 to say so is skipped: one system call a file instead of two.
const EOF_SPARE: usize = 4096;

/// The most a thread's read buffer keeps between reads (softnet_stat of 1,024 CPUs is
/// about 100 KiB).
const KEEP_BUFFER_BYTES: usize = 256 * 1024;

/// Reads from offset 0 until end of file into `buf`, growing it only when a file is
/// larger than any read before, and never past [`MAX_FILE_BYTES`]. seq_file and sysctl
/// files both restart at offset 0.
fn read_all_at(file: &File, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    let mut len = 0usize;
    loop {
        if len >= MAX_FILE_BYTES {
            buf.clear();
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("larger than {MAX_FILE_BYTES} bytes"),
            ));
        }
        if buf.capacity() - len < EOF_SPARE {
            buf.reserve((len.max(256) + EOF_SPARE).min(MAX_FILE_BYTES - len));
        }
        let cap = buf.capacity().min(MAX_FILE_BYTES);
        buf.resize(cap, 0);
        let asked = cap - len;
        let n = loop {
            match file.read_at(&mut buf[len..], len as u64) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    buf.truncate(len);
                    return Err(e);
                }
            }
        };
        len += n;
        if n == 0 || asked - n >= EOF_SPARE {
            buf.truncate(len);
            return Ok(());
        }
    }
}

/// Paths below the configured roots (`--path.procfs`, `--path.sysfs`).
#[derive(Debug, Clone)]
pub struct Roots {
    pub procfs: PathBuf,
    /// `--path.sysfs`: the possible CPUs (`devices/system/cpu/possible`), which number
    /// the rows of `/proc/net/stat/nf_conntrack`. The conntrack hash size comes from
    /// `nf_conntrack_buckets`, the same variable as the `hashsize` module parameter.
    pub sysfs: PathBuf,
}

impl Roots {
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.procfs.join(rel)
    }

    /// A file under `/proc/thread-self/net`: the network namespace of the calling
    /// thread, which is the one the sampler has entered (`/proc/net` follows the
    /// process's main thread instead).
    pub fn proc_net(&self, rel: &str) -> PathBuf {
        self.procfs.join("thread-self/net").join(rel)
    }
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_oversized_files_are_refused_without_blocking_or_growing() {
        let dir = std::env::temp_dir().join(format!("np-procfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // /dev/zero never ends; a read of it would fill memory.
        let err = ProcFile::new("/dev/zero").read_with(|_| ()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // A FIFO with no writer: a blocking open would never return.
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let err = ProcFile::new(&fifo).read_with(|_| ()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // A regular file past the bound (sparse: costs no disk).
        let big = dir.join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(2 * MAX_FILE_BYTES as u64)
            .unwrap();
        let mut f = ProcFile::new(&big);
        let err = f.read_with(|_| ()).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        let cap = READ_BUF.with_borrow(Vec::capacity);
        assert!(cap <= KEEP_BUFFER_BYTES, "{cap}");
        // Exactly at ordinary sizes, all is read.
        std::fs::write(&big, b"262144\n").unwrap();
        assert_eq!(ProcFile::new(&big).read_u64().unwrap(), 262_144);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_read_that_stops_short_of_its_spare_room_is_the_whole_file() {
        // Files produced whole (netstat, snmp), a record at a time (softnet_stat, the
        // conntrack stat rows, mountinfo: many records, over a page), and regular: each
        // read as std reads it, twice (the second time into the grown buffer).
        for path in [
            "/proc/net/netstat",
            "/proc/net/snmp",
            "/proc/net/softnet_stat",
            "/proc/net/stat/nf_conntrack",
            "/proc/self/mountinfo",
            "/proc/self/limits",
            "/proc/sys/net/ipv4/ip_local_port_range",
            "/etc/services",
        ] {
            let Ok(want) = std::fs::read(path) else { continue };
            let mut f = ProcFile::new(path);
            for _ in 0..2 {
                let got = f.read_with(<[u8]>::to_vec).unwrap();
                // Counters move between two reads; the shape does not.
                assert_eq!(
                    got.split(|b| *b == b'\n').count(),
                    want.split(|b| *b == b'\n').count(),
                    "{path}"
                );
                assert!(
                    got.len().abs_diff(want.len()) < 256,
                    "{path}: {} against {}",
                    got.len(),
                    want.len()
                );
            }
        }
    }
}
