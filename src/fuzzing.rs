//! One entry point per decoder of bytes the exporter did not write, for the
//! coverage-guided fuzz targets under `fuzz/` (cargo-fuzz, nightly) and for
//! `tests/fuzz_corpora.rs`, which replays their corpora and the inputs of past
//! findings on the stable toolchain. Each must return, without panicking, whatever
//! the bytes; where a decoder promises more (a bound, a round trip), the entry point
//! checks it.

use std::path::Path;

use crate::netlink::{ctnetlink, for_each_msg, route, sock_diag, Msg};
use crate::procfs;

/// One entry point: bytes in, nothing out but a panic on a bug.
pub type Entry = fn(&[u8]);

/// Every entry point by the name of its fuzz target (and corpus directory).
pub const TARGETS: &[(&str, Entry)] = &[
    ("ctnetlink", ctnetlink),
    ("sock_diag", sock_diag),
    ("rtnetlink", rtnetlink),
    ("procfs", procfs),
    ("web_config", web_config),
    ("kube_proxy_config", kube_proxy_config),
    ("exposition", exposition),
    ("authorization", authorization),
    ("certificate", certificate),
    ("btf", btf),
];

/// The sequence number of the first message, so that the decoders, which skip
/// messages of other requests, look at the input's messages at all.
fn seq_of(data: &[u8]) -> u32 {
    data.get(8..12)
        .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// ctnetlink replies: GET_STATS, GET_STATS_CPU, and a table dump's entries counted as
/// a breakdown counts them.
pub fn ctnetlink(data: &[u8]) {
    let seq = seq_of(data);
    let _ = ctnetlink::decode_stats(data, seq);
    let mut cpus = Vec::new();
    let _ = ctnetlink::decode_stats_cpu(data, seq, &mut cpus);
    let mut tally = crate::source::breakdown::Tally::default();
    let _ = for_each_msg("fuzz", data, seq, |m| {
        if let Msg::Data { payload, .. } = m {
            if let Some(e) = ctnetlink::decode_entry(payload)? {
                tally.add(&e);
            }
        }
        Ok(())
    });
    let ranked = tally.rank(5);
    assert!(ranked.sources.len() <= 5 && ranked.destinations.len() <= 5);
    assert_eq!(ranked.states.iter().map(|s| s.1).sum::<u64>(), ranked.total);
}

/// sock_diag (inet_diag) dump replies.
pub fn sock_diag(data: &[u8]) {
    let mut n = 0usize;
    let _ = sock_diag::decode_dump("fuzz", data, seq_of(data), &mut |_| n += 1);
    assert!(n <= data.len() / 16);
}

/// rtnetlink RTM_GETADDR dump replies.
pub fn rtnetlink(data: &[u8]) {
    let mut out = Vec::new();
    let _ = route::decode(data, seq_of(data), &mut out);
}

/// Every procfs parser; the first byte picks one, the rest is the file.
pub fn procfs(data: &[u8]) {
    let Some((&which, file)) = data.split_first() else {
        return;
    };
    match which % 12 {
        0 => {
            let mut cpus = Vec::new();
            let _ = procfs::conntrack::parse_stat(file, &mut cpus);
        }
        1 => {
            let _ = procfs::net::for_each_pair(file, |_, _, _| {});
        }
        2 => procfs::net::parse_sockstat(file, &mut procfs::net::SockStat::default()),
        3 => {
            let mut rows = Vec::new();
            let _ = procfs::net::parse_softnet(file, &mut rows);
        }
        4 => {
            if let Some((lo, hi)) = procfs::net::parse_port_range(file) {
                assert!(lo <= hi);
            }
        }
        5 => {
            let _ = procfs::pid::parse_stat(file);
        }
        6 => {
            let _ = procfs::pid::parse_max_open_files(file);
        }
        7 => {
            let _ = procfs::pid::parse_btime(file);
        }
        8 => {
            if let Some(cpus) = procfs::parse::cpu_list(file, 4096) {
                assert!(cpus.len() <= 4096);
            }
        }
        9 => {
            let _ = procfs::parse::single_u64(file);
            let _ = procfs::parse::parse_hex(file);
        }
        10 => {
            let _ = crate::pods::pod_uid(&String::from_utf8_lossy(file));
        }
        _ => {
            let _ = procfs::parse::fields(file).count();
        }
    }
}

/// `--web.config.file`: the YAML and every key's value.
pub fn web_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::webconfig::parse(text, Path::new("/nonexistent"));
    }
}

/// kube-proxy's `--config` file, as doctor reads it.
pub fn kube_proxy_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::doctor::kube_proxy_conntrack(text);
    }
}

/// The exposition `doctor --from` reads.
pub fn exposition(data: &[u8]) {
    let e = crate::doctor::expo::parse(&String::from_utf8_lossy(data));
    let _ = e.value("netpressure_conntrack_entries", &[("netns", "1")]);
}

/// The `Authorization` header's value.
pub fn authorization(data: &[u8]) {
    if let Some(c) = crate::webconfig::auth::credentials(data) {
        assert!(!c.user.contains(':'));
    }
}

/// A client certificate's subject alternative names (`client_allowed_sans`).
pub fn certificate(data: &[u8]) {
    let _ = crate::webconfig::tls::subject_alt_names(data);
}

/// The kernel's BTF as the drop-reason names are read from it: the enums by name, then
/// every reason named. Asked for by names the inputs can match: the real ones and one
/// short name.
pub fn btf(data: &[u8]) {
    use crate::btf::{enums, DropReasons, REASON_ENUM, SUBSYS_ENUM};
    let Ok(found) = enums(data, &[REASON_ENUM, SUBSYS_ENUM, "e"]) else {
        return;
    };
    for members in found.iter().flatten() {
        // Each member takes at least 8 bytes of the input.
        assert!(members.len() <= data.len() / 8);
    }
    let none = Vec::new();
    let reasons = found[0].as_ref().or(found[2].as_ref()).unwrap_or(&none);
    let names = DropReasons::new(reasons, found[1].as_ref().unwrap_or(&none));
    for v in reasons.iter().map(|(_, v)| *v as u32).chain([0, 2, 0x1_0001, u32::MAX]) {
        assert!(!names.name(v).is_empty());
    }
}
