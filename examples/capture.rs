//! Captures real kernel replies for the parser tests in `tests/data/` (its README says
//! which scenario each capture comes from).
//!
//! Usage, as root inside the namespace to capture:
//! - `cargo run --example capture -- ctnetlink DIR`: raw GET_STATS and GET_STATS_CPU
//!   reply datagrams (`get_stats.bin`, `get_stats_cpu.bin`);
//! - `cargo run --example capture -- ctnetlink-dump DIR`: the whole conntrack table
//!   (`dump.bin`, the CT_GET dump the breakdown reads);
//! - `cargo run --example capture -- sock_diag DIR`: three IPv4 TCP dumps, `listen.bin`
//!   (LISTEN), `syn_recv.bin` (SYN_RECV) and `ephemeral.bin` (the remotes source's states
//!   with the local-port-range bytecode filter for the range in /proc/sys).
//!
//! Each `NAME.bin` has a `NAME.seq` beside it: the request's sequence number.

use std::fs;
use std::path::{Path, PathBuf};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
use netpressure_exporter::netlink::ctnetlink;
use netpressure_exporter::netlink::sock_diag::{self, state, Filter};
use netpressure_exporter::netlink::NlSocket;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (what, dir) = match (args.next(), args.next()) {
        (Some(w), Some(d)) => (w, PathBuf::from(d)),
        _ => return Err("usage: capture ctnetlink|ctnetlink-dump|sock_diag DIR".into()),
    };
    fs::create_dir_all(&dir)?;
    match what.as_str() {
        "ctnetlink" => {
            let mut sock = NlSocket::open(netlink_sys::constants::NETLINK_NETFILTER)?;
            // GET_STATS sends one message and no DONE: stop after the first datagram.
            let mut req = ctnetlink::build_request(5, NLM_F_REQUEST);
            exchange(&mut sock, &dir, "get_stats", &mut req, false)?;
            let mut req = ctnetlink::build_request(4, NLM_F_REQUEST | NLM_F_DUMP);
            exchange(&mut sock, &dir, "get_stats_cpu", &mut req, true)
        }
        "ctnetlink-dump" => {
            let mut sock = NlSocket::open(netlink_sys::constants::NETLINK_NETFILTER)?;
            let mut req = ctnetlink::build_request(1, NLM_F_REQUEST | NLM_F_DUMP);
            exchange(&mut sock, &dir, "dump", &mut req, true)
        }
        "sock_diag" => {
            let range = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")?;
            let mut it = range.split_whitespace().map(str::parse::<u16>);
            let (lo, hi) = (it.next().ok_or("range")??, it.next().ok_or("range")??);
            let ephemeral = [
                state::ESTABLISHED,
                state::SYN_SENT,
                state::FIN_WAIT1,
                state::FIN_WAIT2,
                state::TIME_WAIT,
                state::CLOSE_WAIT,
                state::LAST_ACK,
                state::CLOSING,
            ]
            .into_iter()
            .fold(0, |m, s| m | state::bit(s));
            let mut sock = NlSocket::open(netlink_sys::constants::NETLINK_SOCK_DIAG)?;
            for (name, states, filter) in [
                ("listen", state::bit(state::LISTEN), Filter::None),
                ("syn_recv", state::bit(state::SYN_RECV), Filter::None),
                ("ephemeral", ephemeral, Filter::LocalPortRange(lo, hi)),
            ] {
                let mut req = sock_diag::build_request(libc::AF_INET as u8, states, filter);
                exchange(&mut sock, &dir, name, &mut req, true)?;
            }
            Ok(())
        }
        _ => Err("usage: capture ctnetlink|ctnetlink-dump|sock_diag DIR".into()),
    }
}

/// Sends `req` and writes every reply datagram to `DIR/NAME.bin`, until NLMSG_DONE or
/// NLMSG_ERROR (or after one datagram when `dump` is false).
fn exchange(sock: &mut NlSocket, dir: &Path, name: &str, req: &mut [u8], dump: bool) -> Result<()> {
    let seq = sock.send("capture", req)?;
    let mut all = Vec::new();
    loop {
        let ends = sock.recv_with("capture", |d| {
            all.extend_from_slice(d);
            Ok(ends_exchange(d))
        })?;
        if !dump || ends {
            break;
        }
    }
    fs::write(dir.join(format!("{name}.bin")), &all)?;
    fs::write(dir.join(format!("{name}.seq")), seq.to_string())?;
    eprintln!("{name}: {} bytes, seq {seq}", all.len());
    Ok(())
}

/// Whether a datagram holds NLMSG_DONE (3) or NLMSG_ERROR (2).
fn ends_exchange(datagram: &[u8]) -> bool {
    let mut off = 0;
    while off + 16 <= datagram.len() {
        let len = u32::from_ne_bytes([datagram[off], datagram[off + 1], datagram[off + 2], datagram[off + 3]]) as usize;
        let ty = u16::from_ne_bytes([datagram[off + 4], datagram[off + 5]]);
        if ty == 3 || ty == 2 {
            return true;
        }
        if len < 16 {
            return false;
        }
        off += (len + 3) & !3;
    }
    false
}
