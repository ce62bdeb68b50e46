//! The tuning values of one network namespace, read in one place: the sysctls that bound
//! the pressures the sources measure. The `sysctl` collector serves them all; sockstat
//! (`tcp_max_tw_buckets`), listeners (`tcp_max_syn_backlog`), remotes
//! (`ip_local_port_range`) and conntrack (hash size, TCP timeouts) take theirs from here
//! instead of reading the files again.
//!
//! Read every scan on the slow lane. The files are opened, read and closed: sysctls
//! change rarely, and a descriptor held open for each of them in every namespace would
//! cost more than the namespace's sockets. `/proc/sys/net` shows the namespace of the
//! thread that opens it, so another namespace's values are read from inside it.

use std::path::PathBuf;

use crate::config::Config;
use crate::procfs::net::parse_port_range;
use crate::procfs::parse::single_u64;
use crate::procfs::ProcError;

/// A per-namespace sysctl: its dotted name and its path under the procfs root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sysctl {
    Somaxconn,
    TcpMaxSynBacklog,
    TcpSyncookies,
    TcpMaxTwBuckets,
    TcpTwReuse,
    TcpTimestamps,
    ConntrackBuckets,
    ConntrackTimeoutEstablished,
    ConntrackTimeoutCloseWait,
    ConntrackTimeoutTimeWait,
}

impl Sysctl {
    pub const ALL: [Sysctl; 10] = [
        Self::Somaxconn,
        Self::TcpMaxSynBacklog,
        Self::TcpSyncookies,
        Self::TcpMaxTwBuckets,
        Self::TcpTwReuse,
        Self::TcpTimestamps,
        Self::ConntrackBuckets,
        Self::ConntrackTimeoutEstablished,
        Self::ConntrackTimeoutCloseWait,
        Self::ConntrackTimeoutTimeWait,
    ];

    /// The name `netpressure_sysctl` serves it under; `None` for the values served as
    /// families of their own (conntrack's).
    pub fn served_name(self) -> Option<&'static str> {
        Some(match self {
            Self::Somaxconn => "net.core.somaxconn",
            Self::TcpMaxSynBacklog => "net.ipv4.tcp_max_syn_backlog",
            Self::TcpSyncookies => "net.ipv4.tcp_syncookies",
            Self::TcpMaxTwBuckets => "net.ipv4.tcp_max_tw_buckets",
            Self::TcpTwReuse => "net.ipv4.tcp_tw_reuse",
            Self::TcpTimestamps => "net.ipv4.tcp_timestamps",
            _ => return None,
        })
    }

    fn path(self) -> &'static str {
        match self {
            Self::Somaxconn => "sys/net/core/somaxconn",
            Self::TcpMaxSynBacklog => "sys/net/ipv4/tcp_max_syn_backlog",
            Self::TcpSyncookies => "sys/net/ipv4/tcp_syncookies",
            Self::TcpMaxTwBuckets => "sys/net/ipv4/tcp_max_tw_buckets",
            Self::TcpTwReuse => "sys/net/ipv4/tcp_tw_reuse",
            Self::TcpTimestamps => "sys/net/ipv4/tcp_timestamps",
            Self::ConntrackBuckets => "sys/net/netfilter/nf_conntrack_buckets",
            Self::ConntrackTimeoutEstablished => "sys/net/netfilter/nf_conntrack_tcp_timeout_established",
            Self::ConntrackTimeoutCloseWait => "sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait",
            Self::ConntrackTimeoutTimeWait => "sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait",
        }
    }
}

/// One namespace's values at the last read; `None` where the kernel lacks the sysctl.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: [Option<u64>; Sysctl::ALL.len()],
    pub port_range: Option<(u16, u16)>,
    /// Whether a read has completed.
    pub read: bool,
}

impl Settings {
    pub fn get(&self, s: Sysctl) -> Option<u64> {
        self.values[s as usize]
    }
}

/// Reads [`Settings`] from the files under a procfs root.
#[derive(Debug)]
pub struct SettingsReader {
    root: PathBuf,
    buf: Vec<u8>,
}

impl SettingsReader {
    pub fn new(cfg: &Config) -> Self {
        Self {
            root: cfg.roots.procfs.clone(),
            buf: Vec::with_capacity(64),
        }
    }

    /// Reads every value in the calling thread's network namespace. A missing file is
    /// a sysctl this kernel (or namespace) lacks.
    ///
    /// # Errors
    /// Outside the namespace ([`ProcError::NotEntered`]), a file that cannot be read, or
    /// none of the files present at all (a wrong root).
    pub fn read(&mut self) -> Result<Settings, ProcError> {
        if !crate::netns::may_open() {
            return Err(ProcError::NotEntered(self.root.join("sys/net")));
        }
        let mut out = Settings::default();
        let mut found = 0;
        for s in Sysctl::ALL {
            let path = self.root.join(s.path());
            match crate::procfs::read_into(&path, &mut self.buf) {
                Ok(()) => {
                    out.values[s as usize] =
                        Some(single_u64(&self.buf).ok_or_else(|| ProcError::parse(&path, "not an unsigned integer"))?);
                    found += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ProcError::io(&path, e)),
            }
        }
        let path = self.root.join("sys/net/ipv4/ip_local_port_range");
        match crate::procfs::read_into(&path, &mut self.buf) {
            Ok(()) => {
                out.port_range = Some(
                    parse_port_range(&self.buf)
                        .ok_or_else(|| ProcError::parse(&path, "expected two ports, low then high"))?,
                );
                found += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ProcError::io(&path, e)),
        }
        if found == 0 {
            return Err(ProcError::NotFound(self.root.join(Sysctl::Somaxconn.path())));
        }
        out.read = true;
        Ok(out)
    }
}
