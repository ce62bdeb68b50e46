//! ctnetlink statistics: `IPCTNL_MSG_CT_GET_STATS` (this namespace's entry count and the
//! global `nf_conntrack_max`) and `IPCTNL_MSG_CT_GET_STATS_CPU` (per-CPU counters, as
//! `conntrack -S` prints them).
//!
//! Kernel traps this code is written around (see KERNEL.md):
//! - GET_STATS answers with one `NLM_F_MULTI` message and **no** `NLMSG_DONE`; waiting for
//!   DONE would block. We read the first message of our sequence number and stop.
//! - GET_STATS_CPU must be sent with `NLM_F_DUMP`, or the kernel sends nothing.
//! - Every attribute is optional: older kernels lack MAX_ENTRIES, CLASH_RESOLVE and
//!   CHAIN_TOOLONG.
//!
//! Both need CAP_NET_ADMIN in the user namespace that owns the socket's network
//! namespace; without it the kernel answers EPERM.
//!
//! The table dump (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`, see [`CtDump`]) serves the
//! breakdown of a table under pressure. It walks every bucket of the global hash
//! (about 15 ms on 262k buckets even for an empty table), so it runs rarely, on the
//! slow lane, and each entry is decoded in place into a [`CtEntry`] without keeping
//! anything.

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::{be_uint, for_each_msg, Msg, NetlinkError, NlSocket};
use crate::model::{CtCounter, CtCpuStats, CtGlobalStats};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// Each entry of a table dump comes as a CT_NEW message.
const IPCTNL_MSG_CT_NEW: u8 = 0;
const IPCTNL_MSG_CT_GET: u8 = 1;
const IPCTNL_MSG_CT_GET_STATS_CPU: u8 = 4;
const IPCTNL_MSG_CT_GET_STATS: u8 = 5;
const NFGENMSG_LEN: usize = 4;

const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;
const CTA_STATS_GLOBAL_MAX_ENTRIES: u16 = 2;

/// Attribute type (`CTA_STATS_*`) of each per-CPU counter.
fn cpu_counter(kind: u16) -> Option<CtCounter> {
    Some(match kind {
        2 => CtCounter::Found,
        4 => CtCounter::Invalid,
        8 => CtCounter::Insert,
        9 => CtCounter::InsertFailed,
        10 => CtCounter::Drop,
        11 => CtCounter::EarlyDrop,
        12 => CtCounter::Error,
        13 => CtCounter::SearchRestart,
        14 => CtCounter::ClashResolve,
        15 => CtCounter::ChainTooLong,
        // SEARCHED(1), NEW(3), IGNORE(5), DELETE(6), DELETE_LIST(7): no longer sent.
        _ => return None,
    })
}

const REQ_STATS: &str = "ctnetlink GET_STATS";
const REQ_DUMP: &str = "ctnetlink table dump";
const REQ_STATS_CPU: &str = "ctnetlink GET_STATS_CPU";

/// Serialises a ctnetlink stats request with `netlink-packet-netfilter`.
pub fn build_request(message_type: u8, flags: u16) -> Vec<u8> {
    let inner = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
        ConntrackMessage::Other {
            message_type,
            attributes: vec![],
        },
    );
    let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(inner));
    msg.header.flags = flags;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Decodes the attributes of a GET_STATS reply message payload (after the netlink header).
fn decode_global(payload: &[u8]) -> Result<CtGlobalStats, NetlinkError> {
    let attrs = payload
        .get(NFGENMSG_LEN..)
        .ok_or_else(|| NetlinkError::decode(REQ_STATS, "payload shorter than nfgenmsg"))?;
    let mut out = CtGlobalStats::default();
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(|e| NetlinkError::decode(REQ_STATS, e))?;
        match nla.kind() & !0xC000 {
            CTA_STATS_GLOBAL_ENTRIES => out.entries = be_uint(nla.value()),
            CTA_STATS_GLOBAL_MAX_ENTRIES => out.max_entries = be_uint(nla.value()),
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes one datagram received after a GET_STATS request with sequence number `seq`.
/// `Ok(None)` when the datagram held nothing for this request.
///
/// # Errors
/// A refused request ([`NetlinkError::Kernel`], e.g. EPERM) or malformed bytes.
pub fn decode_stats(datagram: &[u8], seq: u32) -> Result<Option<CtGlobalStats>, NetlinkError> {
    let want = (NFNL_SUBSYS_CTNETLINK << 8) | u16::from(IPCTNL_MSG_CT_GET_STATS);
    let mut found = None;
    for_each_msg(REQ_STATS, datagram, seq, |m| {
        if let Msg::Data { message_type, payload } = m {
            if message_type == want && found.is_none() {
                found = Some(decode_global(payload)?);
            }
        }
        Ok(())
    })?;
    Ok(found)
}

/// Decodes one datagram of a GET_STATS_CPU dump with sequence number `seq`, appending a
/// record per CPU to `out`. Returns `true` once `NLMSG_DONE` has been seen.
///
/// # Errors
/// A refused request ([`NetlinkError::Kernel`]) or malformed bytes.
pub fn decode_stats_cpu(datagram: &[u8], seq: u32, out: &mut Vec<CtCpuStats>) -> Result<bool, NetlinkError> {
    let want = (NFNL_SUBSYS_CTNETLINK << 8) | u16::from(IPCTNL_MSG_CT_GET_STATS_CPU);
    let mut done = false;
    for_each_msg(REQ_STATS_CPU, datagram, seq, |m| {
        match m {
            Msg::Done => done = true,
            Msg::Data { message_type, payload } if message_type == want => {
                let header = NetfilterHeader::parse(payload).map_err(|e| NetlinkError::decode(REQ_STATS_CPU, e))?;
                let mut row = CtCpuStats {
                    cpu: header.res_id,
                    ..CtCpuStats::default()
                };
                for nla in NlasIterator::new(&payload[NFGENMSG_LEN..]) {
                    let nla = nla.map_err(|e| NetlinkError::decode(REQ_STATS_CPU, e))?;
                    if let (Some(c), Some(v)) = (cpu_counter(nla.kind() & !0xC000), be_uint(nla.value())) {
                        row.set(c, v);
                    }
                }
                out.push(row);
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(done)
}

/// A ctnetlink socket in the namespace it was opened in, with its two requests.
pub struct Ctnetlink {
    sock: NlSocket,
    stats_req: Vec<u8>,
    cpu_req: Vec<u8>,
}

impl Ctnetlink {
    /// Opens a `NETLINK_NETFILTER` socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`NetlinkError::Socket`] (EPROTONOSUPPORT on a kernel without nfnetlink).
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self {
            sock: NlSocket::open(netlink_sys::constants::NETLINK_NETFILTER)?,
            stats_req: build_request(IPCTNL_MSG_CT_GET_STATS, NLM_F_REQUEST),
            cpu_req: build_request(IPCTNL_MSG_CT_GET_STATS_CPU, NLM_F_REQUEST | NLM_F_DUMP),
        })
    }

    /// One GET_STATS round trip.
    ///
    /// # Errors
    /// Any [`NetlinkError`]; EPERM without CAP_NET_ADMIN.
    pub fn stats(&mut self) -> Result<CtGlobalStats, NetlinkError> {
        self.sock.exchange(REQ_STATS, &mut self.stats_req, decode_stats)
    }

    /// One GET_STATS_CPU dump into `out` (cleared first; its allocation is reused).
    ///
    /// # Errors
    /// Any [`NetlinkError`]; EPERM without CAP_NET_ADMIN.
    pub fn stats_cpu(&mut self, out: &mut Vec<CtCpuStats>) -> Result<(), NetlinkError> {
        out.clear();
        self.sock.exchange(REQ_STATS_CPU, &mut self.cpu_req, |d, seq| {
            Ok(decode_stats_cpu(d, seq, out)?.then_some(()))
        })
    }
}

// Attribute types of an entry (`enum ctattr_type` and its nests in
// include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

/// What the breakdown needs of one conntrack entry: the original direction's
/// addresses, destination port and protocol, the TCP state, and the status bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtEntry {
    pub protocol: u8,
    pub source: std::net::IpAddr,
    pub destination: std::net::IpAddr,
    /// 0 for protocols without ports (ICMP).
    pub destination_port: u16,
    /// `enum tcp_conntrack` (3 = ESTABLISHED); `None` for other protocols.
    pub tcp_state: Option<u8>,
    /// `enum ip_conntrack_status` bits: SEEN_REPLY (1 << 1), ASSURED (1 << 2).
    pub status: u32,
}

impl CtEntry {
    pub const SEEN_REPLY: u32 = 1 << 1;
    pub const ASSURED: u32 = 1 << 2;
}

fn nlas(bytes: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NetlinkError>> {
    NlasIterator::new(bytes).map(|nla| {
        let nla = nla.map_err(|e| NetlinkError::decode(REQ_DUMP, e))?;
        let (kind, len) = (nla.kind() & !0xC000, usize::from(nla.length()));
        // The value lives as long as `bytes` (NlaBuffer::value borrows the buffer).
        let value = nla
            .into_inner()
            .get(4..len)
            .ok_or_else(|| NetlinkError::decode(REQ_DUMP, "attribute length"))?;
        Ok((kind, value))
    })
}

fn ip(value: &[u8]) -> Option<std::net::IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(value) {
        return Some(std::net::IpAddr::from(b));
    }
    <[u8; 16]>::try_from(value).ok().map(std::net::IpAddr::from)
}

/// Decodes one CT_NEW message payload of a dump. `Ok(None)` for an entry without an
/// original tuple (never sent by the kernel; skipped rather than trusted).
///
/// # Errors
/// Malformed attributes.
pub fn decode_entry(payload: &[u8]) -> Result<Option<CtEntry>, NetlinkError> {
    let attrs = payload
        .get(NFGENMSG_LEN..)
        .ok_or_else(|| NetlinkError::decode(REQ_DUMP, "payload shorter than nfgenmsg"))?;
    let (mut source, mut destination, mut protocol, mut port) = (None, None, None, 0u16);
    let (mut tcp_state, mut status) = (None, 0u32);
    for nla in nlas(attrs) {
        let (kind, value) = nla?;
        match kind {
            CTA_TUPLE_ORIG => {
                for nla in nlas(value) {
                    let (kind, value) = nla?;
                    match kind {
                        CTA_TUPLE_IP => {
                            for nla in nlas(value) {
                                let (kind, value) = nla?;
                                match kind {
                                    CTA_IP_V4_SRC | CTA_IP_V6_SRC => source = ip(value),
                                    CTA_IP_V4_DST | CTA_IP_V6_DST => destination = ip(value),
                                    _ => {}
                                }
                            }
                        }
                        CTA_TUPLE_PROTO => {
                            for nla in nlas(value) {
                                let (kind, value) = nla?;
                                match (kind, value) {
                                    (CTA_PROTO_NUM, [p, ..]) => protocol = Some(*p),
                                    (CTA_PROTO_DST_PORT, [hi, lo]) => port = u16::from_be_bytes([*hi, *lo]),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            CTA_STATUS => status = be_uint(value).and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            CTA_PROTOINFO => {
                for nla in nlas(value) {
                    let (kind, value) = nla?;
                    if kind != CTA_PROTOINFO_TCP {
                        continue;
                    }
                    for nla in nlas(value) {
                        if let (CTA_PROTOINFO_TCP_STATE, [s, ..]) = nla? {
                            tcp_state = Some(*s);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let (Some(source), Some(destination), Some(protocol)) = (source, destination, protocol) else {
        return Ok(None);
    };
    Ok(Some(CtEntry {
        protocol,
        source,
        destination,
        destination_port: port,
        tcp_state: if protocol == 6 { tcp_state } else { None },
        status,
    }))
}

/// How a dump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpEnd {
    /// NLMSG_DONE: every entry was seen.
    Complete,
    /// The deadline passed first: what was seen is a prefix of the table.
    Cut,
}

/// A ctnetlink socket for one table dump, in the namespace it was opened in. Opened
/// for a dump and dropped after it (dumps are rare, and a cut dump leaves the rest of
/// its reply queued on the socket).
pub struct CtDump {
    sock: NlSocket,
    req: Vec<u8>,
}

impl CtDump {
    /// Opens a `NETLINK_NETFILTER` socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`NetlinkError::Socket`], or `NotEntered` outside the namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self {
            sock: NlSocket::open(netlink_sys::constants::NETLINK_NETFILTER)?,
            req: build_request(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP),
        })
    }

    /// Dumps the namespace's table (IPv4 and IPv6), calling `f` for every entry, until
    /// the end or `deadline`.
    ///
    /// # Errors
    /// Any [`NetlinkError`]; EPERM without CAP_NET_ADMIN.
    pub fn run(&mut self, deadline: std::time::Instant, mut f: impl FnMut(&CtEntry)) -> Result<DumpEnd, NetlinkError> {
        let want = (NFNL_SUBSYS_CTNETLINK << 8) | u16::from(IPCTNL_MSG_CT_NEW);
        self.sock.exchange(REQ_DUMP, &mut self.req, |datagram, seq| {
            let mut done = false;
            for_each_msg(REQ_DUMP, datagram, seq, |m| {
                match m {
                    Msg::Done => done = true,
                    Msg::Data { message_type, payload } if message_type == want => {
                        if let Some(e) = decode_entry(payload)? {
                            f(&e);
                        }
                    }
                    _ => {}
                }
                Ok(())
            })?;
            if done {
                return Ok(Some(DumpEnd::Complete));
            }
            Ok((std::time::Instant::now() >= deadline).then_some(DumpEnd::Cut))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_framing() {
        let req = build_request(IPCTNL_MSG_CT_GET_STATS, NLM_F_REQUEST);
        assert_eq!(req.len(), 20);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), 0x0105);
        assert_eq!(u16::from_ne_bytes([req[6], req[7]]), NLM_F_REQUEST);
        let req = build_request(IPCTNL_MSG_CT_GET_STATS_CPU, NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), 0x0104);
        assert_eq!(u16::from_ne_bytes([req[6], req[7]]), NLM_F_REQUEST | NLM_F_DUMP);
    }
}
