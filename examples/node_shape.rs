//! Makes a node shaped like production, for `tests/vm/node-shape.sh`: pod namespaces (a
//! process each, in a kubelet-shaped cgroup, with its `/var/log/pods` entry), namespaces
//! held only by a bind mount, mounts, processes, conntrack entries in the node's table, a
//! full accept queue, SYN_RECV, a TIME_WAIT storm and drops of several reasons. Every
//! step is a system call, not a command: under qemu's software emulation one `exec` costs
//! about 25 ms, and a shell loop of 7,000 would take minutes.
//!
//! ```text
//! node_shape up DIR CGROUP POD_LOGS PODS BINDS MOUNTS PROCS CONNTRACK
//! node_shape time-wait N
//! node_shape drops N
//! ```
//!
//! `up` writes one line per namespace it made (`pod PID NAMESPACE NAME UID`, `bind
//! PATH`), then `pgid N` (every process it made is in that group: `kill -- -N` ends them)
//! and `ready`, and exits; what it made stays. The node's part needs, made beforehand by
//! the caller, conntrack tracking loopback (an nft `ct state` rule), a rule dropping the
//! last ACK of handshakes to port 7300, and one dropping UDP to port 7998. `time-wait`
//! and `drops` act in the namespace they are run in, when the caller is ready to compare.

#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

const POD_PORT: u16 = 8080;
const POD_BACKLOG: i32 = 4;
const FULL_PORT: u16 = 7100;
const FULL_BACKLOG: i32 = 16;
const TW_PORT: u16 = 7200;
const SYN_RECV_PORT: u16 = 7300;
const SYN_RECV_CLIENTS: usize = 40;
const NF_DROP_PORT: u16 = 7998;
const CLOSED_PORT: u16 = 7999;

fn check(rc: libc::c_int, what: &str) {
    assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// A listening socket with this exact backlog (std's is fixed at 128).
fn listen(port: u16, backlog: i32) -> TcpListener {
    // SAFETY: a new socket, bound and put to listen; its descriptor is owned by the result.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        check(fd, "socket");
        let one: libc::c_int = 1;
        let len = std::mem::size_of_val(&one) as libc::socklen_t;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&raw const one).cast(), len);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let salen = std::mem::size_of_val(&sa) as libc::socklen_t;
        check(libc::bind(fd, (&raw const sa).cast(), salen), "bind");
        check(libc::listen(fd, backlog), "listen");
        TcpListener::from(OwnedFd::from_raw_fd(fd))
    }
}

fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(20)).ok()
}

/// Brings `lo` up in the calling thread's (new) network namespace.
fn loopback_up() {
    // SAFETY: ioctls on a socket of our own with a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(fd, "socket");
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        check(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr), "SIOCGIFFLAGS");
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr), "SIOCSIFFLAGS");
        libc::close(fd);
    }
}

/// Forks; the child runs `f` and then waits for a signal forever. Returns the child's
/// PID once it has written its readiness byte.
fn spawn(f: impl FnOnce()) -> i32 {
    let mut fds = [0; 2];
    // SAFETY: a pipe and a fork in a process with one thread; the child never returns.
    unsafe {
        check(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), "pipe");
        let pid = libc::fork();
        check(pid, "fork");
        if pid == 0 {
            libc::close(fds[0]);
            // A failure in the child must end the child, never unwind into the parent's
            // code that it shares after the fork.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
                libc::_exit(1);
            }
            let mut w = std::fs::File::from_raw_fd(fds[1]);
            let _ = w.write_all(b"r");
            drop(w);
            loop {
                libc::pause();
            }
        }
        libc::close(fds[1]);
        let mut r = std::fs::File::from_raw_fd(fds[0]);
        let mut byte = [0u8; 1];
        assert_eq!(r.read(&mut byte).unwrap(), 1, "child {pid} failed before it was ready");
        pid
    }
}

fn new_netns() {
    // SAFETY: unshare in a single-threaded child.
    check(unsafe { libc::unshare(libc::CLONE_NEWNET) }, "unshare(CLONE_NEWNET)");
    loopback_up();
}

fn pod(i: usize, cgroup: &Path, logs: &Path) -> String {
    let uid = format!("{i:08x}-5a9e-4000-8000-{i:012x}");
    let (ns, name) = ("shape", format!("app-{i}"));
    let cg = cgroup.join(format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{i:064x}.scope",
        uid.replace('-', "_")
    ));
    std::fs::create_dir_all(&cg).unwrap();
    std::fs::create_dir_all(logs.join(format!("{ns}_{name}_{uid}"))).unwrap();
    let pid = spawn(|| {
        std::fs::write(cg.join("cgroup.procs"), "0").unwrap();
        new_netns();
        let l = listen(POD_PORT, POD_BACKLOG);
        // A fifth of the pods hold a full accept queue (the backlog admits one more than
        // itself), a fifth two connections waiting, the rest none.
        let waiting = match i % 5 {
            0 => POD_BACKLOG as usize + 1,
            1 => 2,
            _ => 0,
        };
        let held: Vec<_> = (0..waiting).filter_map(|_| connect(POD_PORT)).collect();
        assert_eq!(held.len(), waiting, "pod {i}: connections");
        std::mem::forget((l, held));
    });
    format!("pod {pid} {ns} {name} {uid}")
}

fn bind_namespace(dir: &Path, i: usize) -> String {
    let path = dir.join(format!("netns/bind{i}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"").unwrap();
    let pid = spawn(new_netns);
    let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    // SAFETY: a bind mount of a namespace file onto an empty file, then the child ends.
    unsafe {
        let rc = libc::mount(
            cstr(&ns).as_ptr(),
            cstr(&path).as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        );
        check(rc, "bind mount of a namespace");
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    format!("bind {}", path.display())
}

fn mounts(dir: &Path, n: usize) {
    let root = dir.join("mounts");
    std::fs::create_dir_all(&root).unwrap();
    let tmpfs = CString::new("tmpfs").unwrap();
    for i in 0..n {
        let at = root.join(i.to_string());
        std::fs::create_dir_all(&at).unwrap();
        let source = CString::new(format!("np-shape-{i}")).unwrap();
        let opts = CString::new("size=4k").unwrap();
        // SAFETY: a tmpfs mount on a directory of our own.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                cstr(&at).as_ptr(),
                tmpfs.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        check(rc, "mount tmpfs");
    }
}

/// The node's own namespace: entries in its conntrack table, a full accept queue and
/// half-open connections, held by one process.
fn node(conntrack: usize) -> i32 {
    spawn(|| {
        let full = listen(FULL_PORT, FULL_BACKLOG);
        let held: Vec<_> = (0..=FULL_BACKLOG).filter_map(|_| connect(FULL_PORT)).collect();
        assert_eq!(held.len(), FULL_BACKLOG as usize + 1, "full queue");
        // The handshake's last ACK is dropped by the caller's rule: the clients think they
        // are connected, the listener holds a request socket each in SYN_RECV.
        let syn_recv = listen(SYN_RECV_PORT, 256);
        let half: Vec<_> = (0..SYN_RECV_CLIENTS).filter_map(|_| connect(SYN_RECV_PORT)).collect();
        assert_eq!(half.len(), SYN_RECV_CLIENTS, "SYN_RECV clients");
        // Conntrack entries: one unreplied UDP flow per (source socket, destination port).
        let ports = 50_000usize;
        let mut sent = 0;
        while sent < conntrack {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            for p in 0..ports.min(conntrack - sent) {
                let _ = s.send_to(b"x", ("127.0.0.1", 10_000 + p as u16));
            }
            sent += ports.min(conntrack - sent);
        }
        std::mem::forget((full, held, syn_recv, half));
    })
}

/// A TIME_WAIT storm in the calling process's namespace: `n` connections the client
/// closes first, then the server. TIME_WAIT lasts 60 s whatever the sysctls, so the
/// caller reads the kernel's count and the exporter's at once after.
fn time_wait(n: usize) {
    let tw = listen(TW_PORT, 4096);
    for _ in 0..n {
        let c = connect(TW_PORT).expect("TIME_WAIT connect");
        let (s, _) = tw.accept().unwrap();
        drop(c);
        drop(s);
    }
}

/// Drops of three reasons in the calling process's namespace, `n` each: UDP to a port the
/// caller's rule drops (netfilter_drop), UDP to a closed port and SYNs to a closed port
/// (no_socket).
fn drops(n: usize) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..n {
        let _ = s.send_to(b"x", ("127.0.0.1", NF_DROP_PORT));
        let _ = s.send_to(b"x", ("127.0.0.1", CLOSED_PORT));
    }
    for _ in 0..n {
        assert!(connect(CLOSED_PORT).is_none());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |s: &String| s.parse::<usize>().expect("a count");
    match &args[..] {
        [cmd, count] if cmd == "time-wait" => time_wait(n(count)),
        [cmd, count] if cmd == "drops" => drops(n(count)),
        [cmd, dir, cgroup, logs, pods, binds, mounts, procs, conntrack] if cmd == "up" => {
            let (dir, cgroup, logs) = (Path::new(dir), Path::new(cgroup), Path::new(logs));
            up(dir, cgroup, logs, [pods, binds, mounts, procs, conntrack].map(n));
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

const USAGE: &str = "usage: node_shape up DIR CGROUP POD_LOGS PODS BINDS MOUNTS PROCS CONNTRACK
       node_shape time-wait N
       node_shape drops N";

fn up(dir: &Path, cgroup: &Path, logs: &Path, [pods, binds, n_mounts, procs, conntrack]: [usize; 5]) {
    // SAFETY: a new process group for everything made here, so that one kill ends it.
    unsafe { libc::setpgid(0, 0) };
    let out = std::io::stdout();
    let mut out = out.lock();
    mounts(dir, n_mounts);
    for i in 0..pods {
        writeln!(out, "{}", pod(i, cgroup, logs)).unwrap();
    }
    for i in 0..binds {
        writeln!(out, "{}", bind_namespace(dir, i)).unwrap();
    }
    writeln!(out, "node {}", node(conntrack)).unwrap();
    for _ in 0..procs {
        spawn(|| {});
    }
    // SAFETY: getpgrp cannot fail.
    writeln!(out, "pgid {}", unsafe { libc::getpgrp() }).unwrap();
    writeln!(out, "ready").unwrap();
    let _ = out.flush();
}
