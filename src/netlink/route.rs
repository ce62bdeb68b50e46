//! rtnetlink: the addresses of a network namespace (`RTM_GETADDR` dump), serialised
//! and parsed with `netlink-packet-route`. The conntrack breakdown names the pod
//! behind a source address with them.

use std::net::IpAddr;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, Parseable, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::{for_each_msg, Msg, NetlinkError, NlSocket};

const REQ: &str = "rtnetlink address dump";
const RTM_NEWADDR: u16 = 20;

/// Serialises an address dump request for every family.
pub fn build_request() -> Vec<u8> {
    let mut msg = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetAddress(AddressMessage::default())),
    );
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Appends the addresses of one datagram of the dump with sequence number `seq` to
/// `out`: each address's local address (`IFA_LOCAL`, which differs from `IFA_ADDRESS`
/// only on point-to-point links). Returns `true` at `NLMSG_DONE`.
///
/// # Errors
/// A refused request or malformed bytes.
pub fn decode(datagram: &[u8], seq: u32, out: &mut Vec<IpAddr>) -> Result<bool, NetlinkError> {
    let mut done = false;
    for_each_msg(REQ, datagram, seq, |m| {
        match m {
            Msg::Done => done = true,
            Msg::Data {
                message_type: RTM_NEWADDR,
                payload,
            } => {
                let msg = AddressMessage::parse(payload).map_err(|e| NetlinkError::Decode {
                    request: REQ,
                    detail: e.to_string(),
                })?;
                let (mut local, mut address) = (None, None);
                for a in msg.attributes {
                    match a {
                        AddressAttribute::Local(ip) => local = Some(ip),
                        AddressAttribute::Address(ip) => address = Some(ip),
                        _ => {}
                    }
                }
                out.extend(local.or(address));
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(done)
}

/// An rtnetlink socket bound to the namespace it was opened in.
pub struct Addresses {
    sock: NlSocket,
    req: Vec<u8>,
}

impl Addresses {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`NetlinkError::Socket`], or `NotEntered` outside the namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self {
            sock: NlSocket::open(netlink_sys::constants::NETLINK_ROUTE)?,
            req: build_request(),
        })
    }

    /// The namespace's addresses now, into `out` (cleared first).
    ///
    /// # Errors
    /// Any [`NetlinkError`].
    pub fn read(&mut self, out: &mut Vec<IpAddr>) -> Result<(), NetlinkError> {
        out.clear();
        self.sock
            .exchange(REQ, &mut self.req, |d, seq| Ok(decode(d, seq, out)?.then_some(())))
    }
}
