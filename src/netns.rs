//! Finding the node's network namespaces: every namespace a process lives in
//! (`/proc/PID/ns/net`, deduplicated by device and inode) and every namespace pinned only
//! by a bind mount (`ip netns`, CNI: `nsfs` entries in PID 1's mountinfo whose root is
//! `net:[INODE]`). Namespaces held only by an open descriptor are invisible to both.
//!
//! Inode numbers are reused once a namespace is freed. The sampler keeps an open
//! descriptor to every namespace it tracks, which keeps the namespace (and so its inode)
//! alive: while tracked, an inode names one namespace. When discovery no longer finds
//! it, the sampler drops its state and the descriptor, and a later namespace with the
//! same inode starts from nothing.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::procfs::parse::fields;

/// A namespace's identity: the (device, inode) of its nsfs file.
pub type NsKey = (u64, u64);

/// How to reach a namespace found by discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// A process living in it (the lowest PID seen), if any.
    pub pid: Option<u32>,
    /// A path that opens it: `/proc/PID/ns/net` or the bind mount under `/proc/1/root`.
    pub path: PathBuf,
}

/// The inode of the initial network namespace on kernels that give it a fixed one
/// (`PROC_NET_INIT_INO` in `include/linux/proc_ns.h`; 6.18 has it). Dynamically
/// allocated namespace inodes start at 0xF0000000, so no other namespace can have it.
pub const INIT_NET_INO: u64 = 0xEFFF_FFF9;

/// The initial network namespace, where evidence shows it; `None` where it cannot be
/// known (then only [`INIT_NET_INO`] identifies it, see [`is_init`]).
///
/// The evidence is kthreadd, the kernel thread that is PID 2 in the initial PID
/// namespace and lives in the initial network namespace. PID 1 is no evidence: without
/// hostPID it is the container's init, whose namespace is a pod's. Unprivileged
/// (no CAP_SYS_PTRACE), PID 2's `ns/net` gives EACCES.
pub fn init_key(procfs: &Path) -> Option<NsKey> {
    let comm = crate::procfs::read(&procfs.join("2/comm")).ok()?;
    if comm.trim_ascii() != b"kthreadd" {
        return None;
    }
    key_of(&procfs.join("2/ns/net")).ok()
}

/// Whether `key` is the initial network namespace: its fixed inode, or the one
/// [`init_key`] found.
pub fn is_init(key: NsKey, init: Option<NsKey>) -> bool {
    key.1 == INIT_NET_INO || Some(key) == init
}

pub fn key_of(path: &Path) -> io::Result<NsKey> {
    let m = fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Opens a namespace for `setns` and checks that it is the namespace `key` names: the
/// path was resolved at discovery, and by now its PID may belong to another process in
/// another namespace.
///
/// # Errors
/// The namespace is gone (ENOENT), may not be opened (EACCES without CAP_SYS_PTRACE
/// for another user's process), or the path now leads to another namespace.
pub fn open(found: &Found, key: NsKey) -> io::Result<File> {
    // Non-blocking: discovery only ever names nsfs files, but a path must never hang.
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&found.path)?;
    let m = f.metadata()?;
    if (m.dev(), m.ino()) != key {
        return Err(io::Error::other(format!(
            "{} is now namespace {} (its process was replaced)",
            found.path.display(),
            m.ino()
        )));
    }
    Ok(f)
}

/// Parses one mountinfo line; returns the mount point when it is an nsfs mount of a
/// network namespace (root `net:[INODE]`).
pub fn nsfs_net_mount(line: &[u8]) -> Option<&[u8]> {
    // id parent major:minor root mountpoint options [optional...] - fstype source super
    let mut f = fields(line);
    let root = f.nth(3)?;
    let mount_point = f.next()?;
    let mut rest = f.skip_while(|x| *x != b"-");
    rest.next()?;
    let fstype = rest.next()?;
    (fstype == b"nsfs" && root.starts_with(b"net:[")).then_some(mount_point)
}

/// Undoes mountinfo's octal escapes (`\040` for a space). The kernel escapes only
/// space, tab, newline and backslash (`\ooo`, three octal digits, at most `\377`); a
/// sequence that is not a byte is kept as it stands.
fn unescape(raw: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let byte = raw
            .get(i + 1..i + 4)
            .filter(|d| raw[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::try_from(d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'))).ok());
        match byte {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(raw[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// Every network namespace on the node, into `out` (cleared first).
///
/// # Errors
/// `procfs` cannot be listed.
pub fn discover(procfs: &Path, out: &mut HashMap<NsKey, Found>) -> io::Result<()> {
    out.clear();
    let mut path = PathBuf::new();
    for entry in fs::read_dir(procfs)?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        path.clear();
        path.push(procfs);
        path.push(pid.to_string());
        path.push("ns/net");
        // Kernel threads and exited processes have no readable ns/net: skip them.
        let Ok(key) = key_of(&path) else { continue };
        match out.get_mut(&key) {
            Some(f) if f.pid.is_none_or(|p| pid < p) => {
                f.pid = Some(pid);
                f.path = path.clone();
            }
            Some(_) => {}
            None => {
                out.insert(
                    key,
                    Found {
                        pid: Some(pid),
                        path: path.clone(),
                    },
                );
            }
        }
    }
    // Bind mounts live in the host's mount namespace: read PID 1's view and open them
    // through its root (a hostPID container), or by their path where PID 1's root is
    // not ours to follow but its mounts are visible to us (the host itself); then our
    // own mount table.
    for (mountinfo, root) in [("1/mountinfo", Some("1/root")), ("self/mountinfo", None)] {
        let Ok(text) = crate::procfs::read(&procfs.join(mountinfo)) else {
            continue;
        };
        for line in text.split(|b| *b == b'\n') {
            let Some(mp) = nsfs_net_mount(line) else { continue };
            let mp = unescape(mp);
            let through_root = root.map(|r| procfs.join(r).join(mp.strip_prefix("/").unwrap_or(&mp)));
            for path in through_root.into_iter().chain(std::iter::once(mp.clone())) {
                if let Ok(key) = key_of(&path) {
                    out.entry(key).or_insert(Found { pid: None, path });
                    break;
                }
            }
        }
    }
    Ok(())
}

// Why a thread-local and an error rather than a parameter: the handles are opened deep
// in the I/O layer (a netlink socket's first use, a proc file's first read) on behalf of
// any of a dozen sources, and what they must know is a fact about the calling thread
// (which namespace it is in). The lane marks the thread ([`without_entering`]); a layer
// that would open a handle answers `NotEntered`, and the lane, which alone can enter a
// namespace, runs that source again inside it. Threading a flag through every source's
// `sample` would carry it through code that never opens anything. The node pass
// (issue 28) removes most entering, and with it most of this path.
thread_local! {
    /// Set while a thread samples another namespace's sources without having entered it.
    static OPENING_FORBIDDEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread may open a namespace-bound handle (a netlink socket, a
/// file under `/proc/thread-self/net` or `/proc/sys/net`): always, but inside
/// [`without_entering`]. A handle binds to the namespace of the thread that opens it,
/// so one opened there would belong to the wrong namespace.
pub fn may_open() -> bool {
    !OPENING_FORBIDDEN.get()
}

/// Runs `f` (another namespace's sources, whose handles are already open and stay bound
/// to it) on a thread that has not entered that namespace: any attempt to open a
/// handle fails with a "not entered" error instead, and the caller enters the namespace
/// and runs that source again.
pub fn without_entering<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            OPENING_FORBIDDEN.set(self.0);
        }
    }
    let _reset = Reset(OPENING_FORBIDDEN.replace(true));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_refuses_a_path_that_now_leads_elsewhere() {
        let found = Found {
            pid: None,
            path: PathBuf::from("/proc/self/ns/net"),
        };
        let key = key_of(&found.path).unwrap();
        assert!(open(&found, key).is_ok());
        // The key of another namespace (as after a PID was reused): refused.
        let err = open(&found, (key.0, key.1 + 1)).unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
    }

    #[test]
    fn the_fixed_init_inode_is_host_whatever_else_is_known() {
        assert!(is_init((4, INIT_NET_INO), None));
        assert!(is_init((4, 4_026_532_245), Some((4, 4_026_532_245))));
        assert!(!is_init((4, 4_026_532_245), None));
        assert!(!is_init((4, 4_026_532_245), Some((4, 4_026_531_992))));
    }

    #[test]
    fn mountinfo_lines() {
        // Captured on the development machine after `ip netns add x` (Linux 6.18.44).
        let l = b"612 29 0:4 net:[4026532245] /run/netns/x rw shared:263 - nsfs nsfs rw";
        assert_eq!(nsfs_net_mount(l), Some(&b"/run/netns/x"[..]));
        let mnt = b"613 29 0:4 mnt:[4026532300] /run/foo rw shared:264 - nsfs nsfs rw";
        assert_eq!(nsfs_net_mount(mnt), None);
        let tmp = b"30 23 0:26 / /run rw,nosuid - tmpfs tmpfs rw";
        assert_eq!(nsfs_net_mount(tmp), None);
        assert_eq!(nsfs_net_mount(b""), None);
        assert_eq!(unescape(b"/run/netns/a\\040b"), PathBuf::from("/run/netns/a b"));
        // Not a byte (over \\377), cut short, or not octal: kept as written, no panic.
        assert_eq!(unescape(b"/a\\400b"), PathBuf::from("/a\\400b"));
        assert_eq!(unescape(b"/a\\777"), PathBuf::from("/a\\777"));
        assert_eq!(unescape(b"/a\\04"), PathBuf::from("/a\\04"));
        assert_eq!(unescape(b"/a\\08x"), PathBuf::from("/a\\08x"));
        assert_eq!(unescape(b"/a\\134b"), PathBuf::from("/a\\b"));
    }
}
