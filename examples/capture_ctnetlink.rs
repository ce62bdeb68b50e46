//! Captures real ctnetlink stats replies for the parser tests in `tests/data/`.
//!
//! Usage (as root, in the namespace to capture):
//! `cargo run --example capture_ctnetlink -- DIR`
//! writes `DIR/get_stats.bin` and `DIR/get_stats_cpu.bin`: the raw datagrams the kernel
//! sent, with the request's sequence number in the file name's companion `.seq`.

use std::fs;
use std::path::PathBuf;

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
use netpressure_exporter::netlink::ctnetlink::build_request;
use netpressure_exporter::netlink::NlSocket;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: capture_ctnetlink DIR")?,
    );
    fs::create_dir_all(&dir)?;
    let mut sock = NlSocket::open(netlink_sys::constants::NETLINK_NETFILTER)?;
    for (name, msg_type, flags, until_done) in [
        ("get_stats", 5u8, NLM_F_REQUEST, false),
        ("get_stats_cpu", 4u8, NLM_F_REQUEST | NLM_F_DUMP, true),
    ] {
        let mut req = build_request(msg_type, flags);
        let seq = sock.send("capture", &mut req)?;
        let mut all = Vec::new();
        loop {
            let d = sock.recv("capture")?;
            all.extend_from_slice(d);
            // The dump ends with NLMSG_DONE (type 3); GET_STATS sends one message only.
            if !until_done || contains_done_or_error(d) {
                break;
            }
        }
        fs::write(dir.join(format!("{name}.bin")), &all)?;
        fs::write(dir.join(format!("{name}.seq")), seq.to_string())?;
        eprintln!("{name}: {} bytes, seq {seq}", all.len());
    }
    Ok(())
}

fn contains_done_or_error(datagram: &[u8]) -> bool {
    let mut off = 0;
    while off + 16 <= datagram.len() {
        let len = u32::from_ne_bytes([
            datagram[off],
            datagram[off + 1],
            datagram[off + 2],
            datagram[off + 3],
        ]) as usize;
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
