//! The few system calls the standard library does not wrap. This is the only module
//! allowed to use `unsafe`; every block states why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Sets `SO_RCVTIMEO` so that a netlink `recv` can never block the sampler forever
/// (for example when the kernel silently ignores a request).
///
/// # Errors
/// The errno of `setsockopt(2)`.
pub fn set_recv_timeout(fd: &impl AsRawFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: `tv` is a valid, initialised timeval that outlives the call, and the
    // length passed is exactly its size. The fd is borrowed from a live socket.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Clock ticks per second (`USER_HZ`), the unit of the CPU times in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(100)
}

/// The page size, the unit of the RSS in `/proc/PID/stat`.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(4096)
}

/// Moves the calling thread into the network namespace `ns` (an open nsfs file).
/// Only this thread changes namespace; files and sockets it opens afterwards stay bound
/// to the namespace they were opened in.
///
/// # Errors
/// The errno of `setns(2)`: EPERM without CAP_SYS_ADMIN.
pub fn setns_net(ns: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: setns takes a descriptor we borrow for the call and a constant flag.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (systemd starts services
/// with a soft limit of 1024; each sampled namespace costs a few descriptors) and
/// returns the (old, new) soft limit.
///
/// # Errors
/// The errno of `getrlimit(2)` or `setrlimit(2)`.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut rl = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit64 that outlives the call.
    if unsafe { libc::getrlimit64(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let old = rl.rlim_cur;
    if rl.rlim_cur < rl.rlim_max {
        rl.rlim_cur = rl.rlim_max;
        // SAFETY: `rl` is a valid rlimit64 that outlives the call.
        if unsafe { libc::setrlimit64(libc::RLIMIT_NOFILE, &rl) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((old, rl.rlim_cur))
}

/// The soft RLIMIT_NOFILE of process `pid` (in the caller's PID namespace), by
/// `prlimit(2)` without setting anything: one system call, where reading
/// `/proc/PID/limits` makes the kernel format sixteen lines.
///
/// # Errors
/// The errno of `prlimit(2)`: EPERM unless the caller has CAP_SYS_RESOURCE or the
/// process runs under the caller's own user and group IDs; ESRCH when it has exited.
pub fn nofile_soft_limit(pid: u32) -> io::Result<u64> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads; `old` is a valid, writable rlimit64 that
    // outlives the call.
    let rc = unsafe { libc::prlimit64(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    if rc == 0 {
        Ok(old.rlim_cur)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `bpf(2)` attribute of the map element commands: map fd, key pointer, value (or
/// next key) pointer, flags.
#[repr(C, align(8))]
struct BpfMapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

fn bpf_map_elem(cmd: libc::c_long, attr: &BpfMapElemAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid bpf_attr prefix for the element commands, its size is
    // passed, and the pointers in it point at buffers the callers keep alive and sized
    // for the map's key and value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<BpfMapElemAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first for `None`), `None` at the
/// end. Reads the kernel's map without allocating (aya's iterators allocate per element).
///
/// # Safety
/// The map's key size must be `size_of::<K>()`: the kernel reads and writes that many
/// bytes at the pointers, whatever `K` is. (`crate::bpf` checks the sizes at load.)
///
/// # Errors
/// The syscall failed other than at the end of the map.
pub unsafe fn bpf_map_next_key<K: Copy + Default>(
    map: std::os::fd::BorrowedFd<'_>,
    key: Option<K>,
) -> io::Result<Option<K>> {
    use std::os::fd::AsRawFd;
    let current = key.unwrap_or_default();
    let mut next = K::default();
    let attr = BpfMapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: if key.is_some() {
            std::ptr::from_ref(&current) as u64
        } else {
            0
        },
        value: std::ptr::from_mut(&mut next) as u64,
        flags: 0,
    };
    match bpf_map_elem(BPF_MAP_GET_NEXT_KEY, &attr) {
        Ok(()) => Ok(Some(next)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `BPF_MAP_DELETE_ELEM` of `key`; `false` when it was not there.
///
/// # Safety
/// As [`bpf_map_next_key`]: the map's key size is `size_of::<K>()`.
///
/// # Errors
/// The syscall failed other than for a missing key.
pub unsafe fn bpf_map_delete<K: Copy>(map: std::os::fd::BorrowedFd<'_>, key: K) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let attr = BpfMapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(&key) as u64,
        value: 0,
        flags: 0,
    };
    match bpf_map_elem(BPF_MAP_DELETE_ELEM, &attr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `BPF_MAP_LOOKUP_ELEM` of `key` in a per-CPU map with `u64` values: one value per
/// possible CPU into `values`. `false` when the key is gone.
///
/// # Safety
/// The map's key size is `size_of::<K>()`, its value size 8, and `values` holds a value
/// for every possible CPU: the kernel writes that many.
///
/// # Errors
/// The syscall failed other than for a missing key.
pub unsafe fn bpf_map_lookup_percpu_u64<K: Copy>(
    map: std::os::fd::BorrowedFd<'_>,
    key: K,
    values: &mut [u64],
) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let attr = BpfMapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(&key) as u64,
        value: values.as_mut_ptr() as u64,
        flags: 0,
    };
    match bpf_map_elem(BPF_MAP_LOOKUP_ELEM, &attr) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// A command whose answer is a new descriptor.
fn bpf_new_fd<A>(cmd: libc::c_long, attr: &A) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: `attr` is a valid bpf_attr prefix for `cmd` (the callers' types mirror
    // the kernel's) and its size is passed; it holds no pointers.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_ref(attr), std::mem::size_of::<A>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(rc).map_err(|_| io::Error::other("bpf returned no descriptor"))?;
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `BPF_LINK_CREATE` for an iterator program (`BPF_TRACE_ITER`, no parameters): the
/// link that iterators are made from ([`bpf_iter_create`]), kept for the program's
/// life. aya's own link makes one iterator only, and allocates per attach.
///
/// # Errors
/// The kernel refused (not an iterator program, no capability).
pub fn bpf_iter_link(prog: std::os::fd::BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_fd: u32,
        attach_type: u32,
        flags: u32,
        iter_info: u64,
        iter_info_len: u32,
        _pad: u32,
    }
    let attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: 0,
        attach_type: BPF_TRACE_ITER,
        flags: 0,
        iter_info: 0,
        iter_info_len: 0,
        _pad: 0,
    };
    bpf_new_fd(BPF_LINK_CREATE, &attr)
}

/// `BPF_ITER_CREATE`: a new iterator of `link`; reading it runs the program.
///
/// # Errors
/// The kernel refused.
pub fn bpf_iter_create(link: std::os::fd::BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct IterCreate {
        link_fd: u32,
        flags: u32,
    }
    let attr = IterCreate {
        link_fd: link.as_raw_fd() as u32,
        flags: 0,
    };
    bpf_new_fd(BPF_ITER_CREATE, &attr)
}

/// A `BPF_F_MMAPABLE` array map, mapped read-only: its values are read in place, with
/// no system call (the node pass's results).
pub struct MappedArray<T> {
    base: std::ptr::NonNull<T>,
    entries: usize,
    bytes: usize,
}

// SAFETY: the mapping is read-only from here and owned by this value; reads copy out.
unsafe impl<T> Send for MappedArray<T> {}

impl<T: Copy> MappedArray<T> {
    /// Maps `entries` values of the array `map`.
    ///
    /// # Safety
    /// The map is an array created `BPF_F_MMAPABLE` with at least `entries` entries,
    /// its value size is `size_of::<T>()` (a multiple of 8, as the kernel lays the
    /// values out), and every bit pattern is a valid `T` (integers only).
    ///
    /// # Errors
    /// `mmap` failed (a map not made mmapable: `EINVAL`).
    pub unsafe fn new(map: std::os::fd::BorrowedFd<'_>, entries: usize) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let bytes = entries
            .checked_mul(std::mem::size_of::<T>())
            .filter(|b| *b > 0)
            .ok_or_else(|| io::Error::other("an empty or oversized array"))?;
        // SAFETY: a new shared read-only mapping of the map's descriptor; the kernel
        // checks the length against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(ptr.cast::<T>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, entries, bytes })
    }

    /// Value `i`, copied out; `None` past the end. Volatile: the kernel writes the
    /// values (while the program runs, which is never during a read of ours).
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.entries {
            return None;
        }
        // SAFETY: in bounds of the mapping, aligned (page-aligned base, T-sized
        // values), and any bits are a valid T (the contract of `new`).
        Some(unsafe { std::ptr::read_volatile(self.base.as_ptr().add(i)) })
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`, 5.14+):
/// unique for the boot, where its inode is reused once it is freed.
///
/// # Errors
/// No socket could be made, or the kernel predates the option (`ENOPROTOOPT`).
pub fn netns_cookie() -> io::Result<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a new socket whose descriptor the OwnedFd closes.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the option writes at most `len` bytes into `cookie`, a u64 on the stack.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Fixes glibc's mmap threshold at 128 KiB (its starting value). Left dynamic, the
/// threshold rises to the size of the largest mmapped block freed, up to 32 MiB: after
/// the first parse of the kernel's BTF (the drop counter's or the node pass's, tens of
/// MB in large blocks), the second parse's blocks came from a thread's arena instead,
/// and stayed resident there (an idle exporter with both programs held 24 MiB instead of
/// 8). Call it at start, before any thread; large blocks are then always mapped and
/// unmapped, which costs nothing in the steady state (a tick allocates nothing).
pub fn fix_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns the heap's free memory to the kernel (glibc's `malloc_trim`): after a
/// one-time burst of allocations (the drop counter's load parses the kernel's whole BTF,
/// about 35 MB, and frees it) the allocator would otherwise keep those pages resident.
pub fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the
    // kernel; it touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The listening sockets systemd passes to a socket-activated service: `LISTEN_FDS`
/// descriptors from 3, for this process (`LISTEN_PID`). The variables are removed, so
/// that no child inherits them. Each must be a listening stream socket.
///
/// Call it while the process has one thread: removing a variable races with any other
/// thread that reads the environment (glibc does not lock `environ` against `getenv`),
/// which is why `remove_var` is `unsafe` from Rust 2024 on.
///
/// # Errors
/// Not socket-activated, or a descriptor that is not a listening stream socket.
pub fn systemd_listeners() -> Result<Vec<std::net::TcpListener>, String> {
    use std::os::fd::FromRawFd;
    const FIRST: i32 = 3;
    let var = |name: &str| std::env::var(name).ok();
    let fds = var("LISTEN_FDS").ok_or(
        "no sockets passed (LISTEN_FDS is unset): start it from a .socket unit, or with systemd-socket-activate",
    )?;
    let n: i32 = fds.parse().map_err(|_| format!("LISTEN_FDS={fds} is not a number"))?;
    // As sd_listen_fds(3): without LISTEN_PID the descriptors are not known to be ours.
    let pid = var("LISTEN_PID").ok_or(
        "LISTEN_FDS is set but LISTEN_PID is not, so the sockets are not known to be this process's (systemd sets both)",
    )?;
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Err(format!(
            "LISTEN_PID={pid} names another process: the sockets are not for this one"
        ));
    }
    if !(1..=64).contains(&n) {
        return Err(format!("LISTEN_FDS={n}: expected 1 to 64 sockets"));
    }
    for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let mut out = Vec::new();
    for fd in FIRST..FIRST + n {
        let int_opt = |opt: libc::c_int| -> Option<libc::c_int> {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `v`.
            let rc =
                unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, std::ptr::from_mut(&mut v).cast(), &mut len) };
            (rc == 0).then_some(v)
        };
        if int_opt(libc::SO_TYPE) != Some(libc::SOCK_STREAM) || int_opt(libc::SO_ACCEPTCONN) != Some(1) {
            return Err(format!("descriptor {fd} from systemd is not a listening stream socket"));
        }
        if !matches!(int_opt(libc::SO_DOMAIN), Some(libc::AF_INET | libc::AF_INET6)) {
            return Err(format!(
                "descriptor {fd} from systemd is not a TCP socket (a unix-domain one?): the exporter serves HTTP over TCP; \
                 use ListenStream=PORT or ADDRESS:PORT in the .socket unit"
            ));
        }
        // SAFETY: systemd passed this descriptor to this process (LISTEN_PID) and nothing
        // else here owns it; close-on-exec so that no child inherits it.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            out.push(std::net::TcpListener::from_raw_fd(fd));
        }
    }
    Ok(out)
}
