//! sock_diag / inet_diag TCP dumps (`NETLINK_SOCK_DIAG`, `SOCK_DIAG_BY_FAMILY`), decoded
//! in place into [`TcpSock`] records: no allocation per socket.
//!
//! Written by hand instead of with `netlink-packet-sock-diag`: that crate allocates a
//! vector of attributes per socket (50,000 TIME_WAIT sockets a scan), its state flags
//! lack NEW_SYN_RECV, and it cannot send request attributes such as the bytecode filter
//! used here. The framing is fixed (`include/uapi/linux/inet_diag.h`).
//!
//! Costs on the test machine (KERNEL.md): a LISTEN-only dump never walks the established
//! hash; any other state walks the whole shared ehash (empty buckets are cheap). No
//! capability is needed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};

use super::{for_each_msg, Msg, NetlinkError, NlSocket};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// The original inet_diag request (`struct inet_diag_req`), still served by the kernel:
/// its dumps run with family AF_UNSPEC, so one walk of the established hash returns
/// IPv4 and IPv6 sockets together, where SOCK_DIAG_BY_FAMILY needs a walk per family.
const TCPDIAG_GETSOCK: u16 = 18;
const COMPAT_REQ_LEN: usize = 60;
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const REQ_LEN: usize = 56;
const MSG_LEN: usize = 72;

/// TCP states as `include/net/tcp_states.h` numbers them.
pub mod state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;

    pub const fn bit(s: u8) -> u32 {
        1 << s
    }
}

/// One socket of a dump. Addresses are the socket's own view: `local` is the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSock {
    pub state: u8,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// LISTEN: current accept-queue length (`sk_ack_backlog`); 0 for request and
    /// TIME_WAIT sockets.
    pub rqueue: u32,
    /// LISTEN: the accept-queue limit (`sk_max_ack_backlog`, the `listen()` backlog after
    /// the somaxconn clamp).
    pub wqueue: u32,
}

/// A filter run by the kernel on every socket before it is copied out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    None,
    /// Local (source) port within `[lo, hi]`: sockets holding an ephemeral port.
    LocalPortRange(u16, u16),
}

fn bytecode(filter: Filter) -> Vec<u8> {
    match filter {
        Filter::None => Vec::new(),
        // Ops are {code u8, yes u8, no u16}; a port compare is followed by an op whose
        // `no` holds the port. Jumping past the end rejects; consuming exactly accepts.
        Filter::LocalPortRange(lo, hi) => {
            let op = |code: u8, yes: u8, no: u16| {
                let n = no.to_ne_bytes();
                [code, yes, n[0], n[1]]
            };
            [op(2, 8, 20), op(0, 0, lo), op(3, 8, 12), op(0, 0, hi)].concat()
        }
    }
}

fn frame(message_type: u16, body: &[u8], bytecode: &[u8]) -> Vec<u8> {
    let attr_len = if bytecode.is_empty() { 0 } else { 4 + bytecode.len() };
    let total = 16 + body.len() + attr_len;
    let mut b = Vec::with_capacity(total);
    b.extend_from_slice(&(total as u32).to_ne_bytes());
    b.extend_from_slice(&message_type.to_ne_bytes());
    b.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    b.extend_from_slice(&[0u8; 8]); // sequence number (stamped on send), port id
    b.extend_from_slice(body);
    if !bytecode.is_empty() {
        b.extend_from_slice(&(attr_len as u16).to_ne_bytes());
        b.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        b.extend_from_slice(bytecode);
    }
    b
}

/// Serialises a TCP dump of both address families in one walk (`TCPDIAG_GETSOCK`).
pub fn build_request_both(states: u32, filter: Filter) -> Vec<u8> {
    let mut body = Vec::with_capacity(COMPAT_REQ_LEN);
    // idiag_family (ignored for dumps), src_len, dst_len, ext: no extensions.
    body.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]);
    body.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: match everything
    body.extend_from_slice(&states.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes()); // idiag_dbs
    frame(TCPDIAG_GETSOCK, &body, &bytecode(filter))
}

/// Serialises a TCP dump request for `family` (`AF_INET`/`AF_INET6`) and `states` (a
/// mask of [`state::bit`]), with an optional bytecode filter.
pub fn build_request(family: u8, states: u32, filter: Filter) -> Vec<u8> {
    let mut body = Vec::with_capacity(REQ_LEN);
    body.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0 /* no extensions */, 0]);
    body.extend_from_slice(&states.to_ne_bytes());
    body.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: match everything
    frame(SOCK_DIAG_BY_FAMILY, &body, &bytecode(filter))
}

fn addr(family: u8, raw: &[u8]) -> Option<IpAddr> {
    match i32::from(family) {
        libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        libc::AF_INET6 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(raw.get(..16)?);
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Decodes one `inet_diag_msg` (the payload of a SOCK_DIAG_BY_FAMILY reply message).
pub fn decode_msg(payload: &[u8]) -> Option<TcpSock> {
    if payload.len() < MSG_LEN {
        return None;
    }
    let family = payload[0];
    let u32_at = |o: usize| u32::from_ne_bytes([payload[o], payload[o + 1], payload[o + 2], payload[o + 3]]);
    Some(TcpSock {
        state: payload[1],
        local_port: u16::from_be_bytes([payload[4], payload[5]]),
        remote_port: u16::from_be_bytes([payload[6], payload[7]]),
        local: addr(family, &payload[8..24])?,
        remote: addr(family, &payload[24..40])?,
        rqueue: u32_at(56),
        wqueue: u32_at(60),
    })
}

/// Decodes one datagram of a dump with sequence number `seq`, calling `f` per socket.
/// Returns `true` once `NLMSG_DONE` has been seen.
///
/// # Errors
/// A refused request or malformed bytes.
pub fn decode_dump(
    request: &'static str,
    datagram: &[u8],
    seq: u32,
    f: &mut dyn FnMut(&TcpSock),
) -> Result<bool, NetlinkError> {
    let mut done = false;
    for_each_msg(request, datagram, seq, |m| {
        match m {
            Msg::Done => done = true,
            Msg::Data { message_type, payload }
                if message_type == SOCK_DIAG_BY_FAMILY || message_type == TCPDIAG_GETSOCK =>
            {
                let sock = decode_msg(payload).ok_or_else(|| NetlinkError::decode(request, "short inet_diag_msg"))?;
                f(&sock);
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(done)
}

/// A sock_diag socket in the namespace it was opened in.
pub struct SockDiag {
    sock: NlSocket,
}

/// A sock_diag socket opened on first use (inside its namespace) and closed after a
/// failure, so that the next use opens a fresh one: the one way every source holds one.
#[derive(Default)]
pub struct LazySockDiag(Option<SockDiag>);

impl LazySockDiag {
    /// Runs `f` on the socket, opening it first.
    ///
    /// # Errors
    /// Opening the socket, or what `f` returns (the socket is then closed).
    pub fn with<R>(&mut self, f: impl FnOnce(&mut SockDiag) -> Result<R, NetlinkError>) -> Result<R, NetlinkError> {
        let mut diag = match self.0.take() {
            Some(d) => d,
            None => SockDiag::open()?,
        };
        let r = f(&mut diag);
        if r.is_ok() {
            self.0 = Some(diag);
        }
        r
    }
}

/// One kind of TCP dump over both address families: a single `TCPDIAG_GETSOCK` walk,
/// or, on a kernel that refuses it, one SOCK_DIAG_BY_FAMILY dump per family.
pub struct TcpDump {
    name: &'static str,
    both: Vec<u8>,
    per_family: [Vec<u8>; 2],
    use_both: bool,
    /// Skip the IPv6 dump when falling back per family (set by the caller).
    pub skip_v6: bool,
}

impl TcpDump {
    pub fn new(name: &'static str, states: u32, filter: Filter) -> Self {
        Self {
            name,
            both: build_request_both(states, filter),
            per_family: [
                build_request(libc::AF_INET as u8, states, filter),
                build_request(libc::AF_INET6 as u8, states, filter),
            ],
            use_both: true,
            skip_v6: false,
        }
    }

    /// Runs the dump on `diag`, calling `f` for every socket.
    ///
    /// # Errors
    /// Any [`NetlinkError`] but the one refusing the combined request, after which the
    /// per-family requests are used for good.
    pub fn run(&mut self, diag: &mut SockDiag, f: &mut dyn FnMut(&TcpSock)) -> Result<(), NetlinkError> {
        if self.use_both {
            match diag.dump(self.name, &mut self.both, f) {
                Err(NetlinkError::Kernel { errno, .. })
                    if matches!(errno, libc::EINVAL | libc::EOPNOTSUPP | libc::ENOENT) =>
                {
                    // Every namespace's dumps learn this on their own; the node hears it
                    // once (the kernel is the same for all of them).
                    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
                    let level = if SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        log::Level::Debug
                    } else {
                        log::Level::Info
                    };
                    log::log!(
                        level,
                        "sock_diag: the kernel refuses TCPDIAG_GETSOCK (errno {errno}); dumping per address family"
                    );
                    self.use_both = false;
                }
                other => return other,
            }
        }
        diag.dump(self.name, &mut self.per_family[0], f)?;
        if !self.skip_v6 {
            diag.dump(self.name, &mut self.per_family[1], f)?;
        }
        Ok(())
    }
}

impl SockDiag {
    /// # Errors
    /// [`NetlinkError::Socket`].
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self {
            sock: NlSocket::open(netlink_sys::constants::NETLINK_SOCK_DIAG)?,
        })
    }

    /// Runs one dump (`req` from [`build_request`]), calling `f` for every socket.
    ///
    /// # Errors
    /// Any [`NetlinkError`].
    pub fn dump(
        &mut self,
        request: &'static str,
        req: &mut [u8],
        f: &mut dyn FnMut(&TcpSock),
    ) -> Result<(), NetlinkError> {
        self.sock.exchange(
            request,
            req,
            |d, seq| Ok(decode_dump(request, d, seq, f)?.then_some(())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let r = build_request(libc::AF_INET as u8, state::bit(state::LISTEN), Filter::None);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 20);
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(r[17], 6);
        assert_eq!(u32::from_ne_bytes([r[20], r[21], r[22], r[23]]), 1 << 10);
        let r = build_request_both(1 << 6, Filter::None);
        assert_eq!(r.len(), 16 + 60);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 18);
        assert_eq!(u32::from_ne_bytes([r[68], r[69], r[70], r[71]]), 1 << 6);
        let r = build_request(libc::AF_INET6 as u8, 1 << 6, Filter::LocalPortRange(32768, 60999));
        assert_eq!(r.len(), 72 + 4 + 16);
        assert_eq!(&r[72..76], &[20, 0, 1, 0]);
        assert_eq!(u16::from_ne_bytes([r[82], r[83]]), 32768);
        assert_eq!(u16::from_ne_bytes([r[90], r[91]]), 60999);
    }
}
