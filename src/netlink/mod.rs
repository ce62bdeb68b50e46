//! The only place that sees netlink sockets and `netlink-packet-*` types.
//!
//! Requests are serialised once, when a client is created, and re-sent with a fresh
//! sequence number; replies are decoded in place from one reused receive buffer with
//! the zero-copy views of `netlink-packet-core` (`NetlinkBuffer`, `NlasIterator`), so a
//! steady-state sample allocates nothing.

pub mod ctnetlink;
pub mod route;
pub mod sock_diag;

use std::io;
use std::time::Duration;

use netlink_packet_core::{ErrorBuffer, NetlinkBuffer, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN};
use netlink_sys::{Socket, SocketAddr};

/// How long a request may wait for the kernel before the sample fails. The kernel
/// answers these requests in well under a millisecond; this only guards against a
/// request the kernel ignores, which would otherwise block the sampler for ever.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// One datagram can never exceed 32 KiB for a dump (the kernel caps its allocation);
/// twice that leaves room for anything a future kernel sends, and `MSG_TRUNC` catches
/// the rest.
const RECV_BUFFER: usize = 64 * 1024;

/// A netlink failure, with the request it concerns and the errno where there is one.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening netlink socket (protocol {protocol}): {source}")]
    Socket { protocol: isize, source: io::Error },
    #[error("{request}: {source}")]
    Io { request: &'static str, source: io::Error },
    #[error("{request}: kernel replied {}", io::Error::from_raw_os_error(*.errno))]
    Kernel { request: &'static str, errno: i32 },
    #[error("{request}: malformed reply: {detail}")]
    Decode { request: &'static str, detail: String },
    #[error("{request}: datagram of {len} bytes truncated to the {RECV_BUFFER}-byte buffer")]
    Truncated { request: &'static str, len: usize },
    #[error("{request}: no reply within {RECV_TIMEOUT:?}")]
    Timeout { request: &'static str },
    /// The socket must be opened inside its network namespace, which the thread has not
    /// entered (see [`crate::netns::without_entering`]).
    #[error("opening netlink socket (protocol {protocol}): this thread is outside its namespace")]
    NotEntered { protocol: isize },
}

impl NetlinkError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::Socket { source, .. } | Self::Io { source, .. } => source.raw_os_error(),
            Self::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The kernel refused us: CAP_NET_ADMIN is missing in the namespace's user namespace.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self.errno(), Some(libc::EPERM | libc::EACCES))
    }

    /// The kernel does not offer this interface (netfilter or ctnetlink not built or
    /// loaded). Not worth a warning.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::EPROTONOSUPPORT | libc::EOPNOTSUPP | libc::EAFNOSUPPORT | libc::ENOENT)
        )
    }

    fn decode(request: &'static str, detail: impl ToString) -> Self {
        Self::Decode {
            request,
            detail: detail.to_string(),
        }
    }
}

thread_local! {
    /// One receive buffer per thread, shared by all its sockets: the sampler thread keeps
    /// several sockets in every network namespace it samples, and a buffer each would
    /// cost 64 KiB a socket.
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A connected netlink socket.
pub struct NlSocket {
    sock: Socket,
    seq: u32,
}

impl NlSocket {
    /// Opens a socket of `protocol` in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`NetlinkError::Socket`] with the errno of socket/bind/connect/setsockopt.
    pub fn open(protocol: isize) -> Result<Self, NetlinkError> {
        if !crate::netns::may_open() {
            return Err(NetlinkError::NotEntered { protocol });
        }
        let err = |source| NetlinkError::Socket { protocol, source };
        let mut sock = Socket::new(protocol).map_err(err)?;
        sock.bind_auto().map_err(err)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        crate::sys::set_recv_timeout(&sock, RECV_TIMEOUT).map_err(err)?;
        Ok(Self { sock, seq: 0 })
    }

    /// Stamps `req` with the next sequence number, sends it, and returns that number.
    ///
    /// # Errors
    /// [`NetlinkError::Io`] when `send` fails.
    pub fn send(&mut self, request: &'static str, req: &mut [u8]) -> Result<u32, NetlinkError> {
        self.seq = self.seq.wrapping_add(1).max(1);
        if let Some(field) = req.get_mut(8..12) {
            field.copy_from_slice(&self.seq.to_ne_bytes());
        }
        self.sock
            .send(req, 0)
            .map_err(|source| NetlinkError::Io { request, source })?;
        Ok(self.seq)
    }

    /// Sends `req` and feeds every reply datagram to `decode` (with the request's sequence
    /// number) until it returns a result: the end of a dump, or the one message of a
    /// plain request. Bounded, so that a kernel that never ends a dump cannot hold the
    /// sampler: 65,536 datagrams of up to 32 KiB is millions of records.
    ///
    /// # Errors
    /// Any [`NetlinkError`] of sending, receiving or `decode`.
    pub fn exchange<R>(
        &mut self,
        request: &'static str,
        req: &mut [u8],
        mut decode: impl FnMut(&[u8], u32) -> Result<Option<R>, NetlinkError>,
    ) -> Result<R, NetlinkError> {
        const MAX_DATAGRAMS: usize = 1 << 16;
        let seq = self.send(request, req)?;
        for _ in 0..MAX_DATAGRAMS {
            if let Some(r) = self.recv_with(request, |d| decode(d, seq))? {
                return Ok(r);
            }
        }
        Err(NetlinkError::decode(request, "the reply did not end"))
    }

    /// Receives one datagram and hands it to `f`.
    ///
    /// # Errors
    /// [`NetlinkError::Timeout`], [`NetlinkError::Truncated`], [`NetlinkError::Io`], or
    /// what `f` returns.
    pub fn recv_with<R>(
        &mut self,
        request: &'static str,
        f: impl FnOnce(&[u8]) -> Result<R, NetlinkError>,
    ) -> Result<R, NetlinkError> {
        RECV_BUF.with_borrow_mut(|buf| {
            if buf.len() < RECV_BUFFER {
                buf.resize(RECV_BUFFER, 0);
            }
            let n = loop {
                let mut slice = &mut buf[..];
                match self.sock.recv(&mut slice, libc::MSG_TRUNC) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                        return Err(NetlinkError::Timeout { request });
                    }
                    Err(source) => return Err(NetlinkError::Io { request, source }),
                }
            };
            if n > buf.len() {
                return Err(NetlinkError::Truncated { request, len: n });
            }
            f(&buf[..n])
        })
    }
}

/// What one netlink message in a reply datagram means to a request/response exchange.
#[derive(Debug)]
pub enum Msg<'a> {
    /// A message of the type we asked for, with its payload.
    Data { message_type: u16, payload: &'a [u8] },
    /// `NLMSG_ERROR` with code 0.
    Ack,
    /// `NLMSG_DONE`: the end of a dump.
    Done,
    /// Noise: NOOP, or a reply to an earlier request (another sequence number).
    Skip,
}

/// Walks the netlink messages of one datagram, checking every length, and classifies
/// each for the request with sequence number `seq`.
///
/// # Errors
/// A length that does not fit, `NLMSG_OVERRUN`, or `NLMSG_ERROR`/`NLMSG_DONE` carrying an
/// errno (a refused request), as [`NetlinkError::Kernel`].
pub fn for_each_msg<'a>(
    request: &'static str,
    datagram: &'a [u8],
    seq: u32,
    mut f: impl FnMut(Msg<'a>) -> Result<(), NetlinkError>,
) -> Result<(), NetlinkError> {
    let mut off = 0usize;
    while off < datagram.len() {
        let rest = &datagram[off..];
        let msg = NetlinkBuffer::new_checked(rest).map_err(|e| NetlinkError::decode(request, e))?;
        let len = msg.length() as usize;
        // new_checked guarantees 16 <= len <= rest.len(); messages are 4-byte aligned.
        off += (len + 3) & !3;
        if msg.sequence_number() != seq {
            f(Msg::Skip)?;
            continue;
        }
        let payload = &rest[16..len];
        match msg.message_type() {
            NLMSG_NOOP => f(Msg::Skip)?,
            NLMSG_OVERRUN => return Err(NetlinkError::decode(request, "NLMSG_OVERRUN")),
            NLMSG_ERROR => {
                let err = ErrorBuffer::new_checked(payload).map_err(|e| NetlinkError::decode(request, e))?;
                match err.code() {
                    None => f(Msg::Ack)?,
                    Some(code) => {
                        return Err(NetlinkError::Kernel {
                            request,
                            errno: code.get().saturating_abs(),
                        })
                    }
                }
            }
            NLMSG_DONE => {
                // A dump that failed half-way reports its errno in DONE's payload.
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if code < 0 {
                    return Err(NetlinkError::Kernel {
                        request,
                        errno: code.saturating_abs(),
                    });
                }
                f(Msg::Done)?;
            }
            message_type => f(Msg::Data { message_type, payload })?,
        }
    }
    Ok(())
}

/// Reads a big-endian integer attribute value of 4 or 8 bytes (ctnetlink sends be32).
pub fn be_uint(value: &[u8]) -> Option<u64> {
    match value.len() {
        4 => Some(u64::from(u32::from_be_bytes([value[0], value[1], value[2], value[3]]))),
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(value);
            Some(u64::from_be_bytes(b))
        }
        _ => None,
    }
}
