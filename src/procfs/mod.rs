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
    read_all_at(&open_regular(path)?, buf, Produced::Records)
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
    produced: Produced,
}

thread_local! {
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl ProcFile {
    /// A file read until a read returns 0 ([`Produced::Records`]): right for any file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: None,
            produced: Produced::Records,
        }
    }

    /// A file the kernel produces whole in one call ([`Produced::Whole`]), read in one
    /// system call. Only for the kinds that variant names: a seq_file of records read
    /// this way is cut after its first page, with no error.
    pub fn whole(path: impl Into<PathBuf>) -> Self {
        Self {
            produced: Produced::Whole,
            ..Self::new(path)
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
            let r = read_all_at(file, buf, self.produced).map(|()| f(buf));
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

/// How the kernel produces a file, which decides how a reader knows it has the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produced {
    /// A record at a time (a seq_file with an iterator: mountinfo, smaps, softnet_stat,
    /// `stat/nf_conntrack`, `/proc/net/tcp`): one `read(2)` gives at most about a page,
    /// whatever the buffer, so only a read that returns 0 says the end came. The default:
    /// it is right for every file, at the cost of that last empty read.
    Records,
    /// Whole, by one call of the kernel's show function (`single_open`: sockstat,
    /// netstat, snmp, `/proc/PID/stat` and `limits`; a sysctl; a sysfs attribute): the
    /// first read into a buffer larger than the file returns all of it, so a read that
    /// returns less than it asked for is the end, and the empty read is saved.
    Whole,
}

/// Room a read asks for beyond what the buffer already holds: a page, the most a seq_file
/// gives per read.
const READ_ROOM: usize = 4096;

/// The most a thread's read buffer keeps between reads (softnet_stat of 1,024 CPUs is
/// about 120 KiB; a mount table past this is read into a buffer given back after).
const KEEP_BUFFER_BYTES: usize = 256 * 1024;

/// Reads from offset 0 to the end of the file into `buf`, growing it only when a file is
/// larger than any read before, and never past [`MAX_FILE_BYTES`]. seq_file and sysctl
/// files both restart at offset 0; the reads after the first continue where the last
/// stopped, which a seq_file serves without walking its records again.
fn read_all_at(file: &File, buf: &mut Vec<u8>, produced: Produced) -> io::Result<()> {
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
        if buf.capacity() - len < READ_ROOM {
            buf.reserve((len.max(256) + READ_ROOM).min(MAX_FILE_BYTES - len));
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
        let end = match produced {
            Produced::Records => n == 0,
            Produced::Whole => n < asked,
        };
        if end {
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

    /// A child process that holds still while its files are read, killed on drop.
    struct Still(std::process::Child);

    impl Still {
        /// Runs `script` under `sh` and waits until it prints `ready`.
        fn start(cmd: &mut std::process::Command) -> Self {
            use std::io::BufRead;
            let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
            let mut line = String::new();
            let out = child.stdout.take().unwrap();
            std::io::BufReader::new(out).read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready", "the child did not start");
            Self(child)
        }

        fn file(&self, name: &str) -> PathBuf {
            PathBuf::from(format!("/proc/{}/{name}", self.0.id()))
        }
    }

    impl Drop for Still {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Reads `path` with a `ProcFile` (twice: the second time into the grown buffer) and
    /// one-shot, and checks each against what std reads (until a read returns 0), as
    /// `view` sees them.
    fn reads_whole_as(path: &Path, at_least: usize, view: fn(&[u8]) -> Vec<Vec<u8>>) {
        let want = std::fs::read(path).unwrap();
        // The file must be past a page, or the test could not fail.
        assert!(want.len() >= at_least, "{}: {} bytes", path.display(), want.len());
        let want = view(&want);
        let mut f = ProcFile::new(path);
        for _ in 0..2 {
            assert!(f.read_with(|got| view(got) == want).unwrap(), "{}", path.display());
        }
        assert!(view(&read(path).unwrap()) == want, "{}", path.display());
    }

    fn reads_whole(path: &Path, at_least: usize) {
        reads_whole_as(path, at_least, |b| vec![b.to_vec()]);
    }

    /// smaps by its lines' names: a mapping's line whole, a field's up to its colon. The
    /// kernel's page ageing changes `Referenced` and the like even in a process that
    /// sleeps, but no mapping or field comes or goes.
    fn smaps_shape(b: &[u8]) -> Vec<Vec<u8>> {
        b.split(|c| *c == b'\n')
            .map(|line| match line.iter().position(|c| *c == b':') {
                Some(colon) if line[..colon].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') => {
                    line[..colon].to_vec()
                }
                _ => line.to_vec(),
            })
            .collect()
    }

    #[test]
    fn seq_files_of_many_pages_are_read_to_their_end() {
        // Found on production-shaped nodes: a reader that took "the buffer was not
        // filled" for the end read one page of each (a seq_file gives about a page per
        // read), and lost the namespaces and CPUs past it without an error.
        //
        // smaps of a process with 200 mappings that do not merge (alternate protections):
        // over 80 KiB, about 4 of them per page.
        let smaps = Still::start(std::process::Command::new("python3").args([
            "-c",
            "import mmap, sys, time\n\
             m = [mmap.mmap(-1, 4096, prot=mmap.PROT_READ | (i % 2) * mmap.PROT_WRITE) for i in range(200)]\n\
             print('ready', flush=True); time.sleep(600)",
        ]));
        reads_whole_as(&smaps.file("smaps"), 80 << 10, smaps_shape);
        reads_whole(&smaps.file("maps"), 12 << 10);

        // A mount table of 1,500 tmpfs mounts, made in a mount namespace of the test's own
        // (a node's is hundreds of KiB: overlays, tokens, secrets, `/run/netns/cni-*`).
        let dir = std::env::temp_dir().join(format!("np-mounts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mounts = Still::start(std::process::Command::new("unshare").args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            r#"set -e; cd "$1"; mount -t tmpfs -o size=64k np-mounts .; cd "$1"
               i=0; while [ $i -lt 1500 ]; do mkdir $i; mount -t tmpfs -o size=4k np-mount-$i $i; i=$((i+1)); done
               echo ready; exec sleep 600"#,
            "sh",
            &dir.display().to_string(),
        ]));
        let mountinfo = mounts.file("mountinfo");
        reads_whole(&mountinfo, 100 << 10);
        let text = read(&mountinfo).unwrap();
        let ours = text
            .split(|b| *b == b'\n')
            .filter(|l| l.windows(9).any(|w| w == b"np-mount-"))
            .count();
        assert_eq!(ours, 1500);
        drop(mounts);
        let _ = std::fs::remove_dir_all(&dir);

        // Whatever this machine has: softnet_stat and conntrack's stat (a row per possible
        // CPU), files produced whole, sysctls and a regular file.
        for path in [
            "/proc/net/softnet_stat",
            "/proc/net/stat/nf_conntrack",
            "/proc/self/limits",
            "/proc/sys/net/ipv4/ip_local_port_range",
            "/etc/services",
        ] {
            let path = Path::new(path);
            if path.exists() {
                reads_whole(path, 1);
            }
        }
    }

    #[test]
    fn files_produced_whole_come_in_one_read_and_records_in_many() {
        // What `ProcFile::whole` rests on: a single_open file or a sysctl gives all of
        // itself to one read, a seq_file of records a page at most.
        let read_once = |path: &str| {
            let f = open_regular(Path::new(path)).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            f.read_at(&mut buf, 0).unwrap()
        };
        for path in [
            "/proc/net/netstat",
            "/proc/net/snmp",
            "/proc/net/sockstat",
            "/proc/net/sockstat6",
            "/proc/self/stat",
            "/proc/self/limits",
            "/proc/sys/fs/file-nr",
        ] {
            // A file such as /proc/self/stat changes length while the test's other
            // threads run: the lengths must agree in one of a few tries, which a read
            // cut short never does.
            let lengths: Vec<(usize, usize)> = (0..10)
                .map(|_| (read_once(path), std::fs::read(path).unwrap().len()))
                .collect();
            assert!(lengths.iter().any(|(one, whole)| one == whole), "{path}: {lengths:?}");
        }
        let smaps = std::fs::read("/proc/self/smaps").unwrap().len();
        assert!(smaps > 8192, "{smaps}");
        assert!(read_once("/proc/self/smaps") <= 4096);
    }
}
