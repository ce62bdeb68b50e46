//! Parsers against real captured kernel output (tests/data/README.md says where each
//! file came from), plus truncated and corrupted copies of it: every input returns a
//! value or an error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use netpressure_exporter::model::{CtCounter, CtCpuStats};
use netpressure_exporter::netlink::ctnetlink::{decode_stats, decode_stats_cpu};
use netpressure_exporter::procfs::conntrack::parse_stat;

fn data(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn seq(path: &str) -> u32 {
    String::from_utf8(data(path)).unwrap().trim().parse().unwrap()
}

#[test]
fn get_stats_reply_from_a_full_table() {
    let stats = decode_stats(
        &data("linux-6.18.44-full/get_stats.bin"),
        seq("linux-6.18.44-full/get_stats.seq"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(stats.entries, Some(50));
    assert_eq!(stats.max_entries, Some(50));
}

#[test]
fn get_stats_reply_with_another_sequence_number_is_not_ours() {
    let s = seq("linux-6.18.44-full/get_stats.seq");
    assert_eq!(
        decode_stats(&data("linux-6.18.44-full/get_stats.bin"), s + 1).unwrap(),
        None
    );
}

#[test]
fn get_stats_cpu_dump_from_a_full_table() {
    let mut cpus = Vec::new();
    let done = decode_stats_cpu(
        &data("linux-6.18.44-full/get_stats_cpu.bin"),
        seq("linux-6.18.44-full/get_stats_cpu.seq"),
        &mut cpus,
    )
    .unwrap();
    assert!(done, "the dump ends with NLMSG_DONE");
    assert_eq!(cpus.len(), 2);
    assert_eq!(cpus[0].cpu, 0);
    assert_eq!(cpus[1].cpu, 1);
    assert_eq!(cpus[0].get(CtCounter::Drop), Some(10));
    assert_eq!(cpus[1].get(CtCounter::Drop), Some(0));
    // 6.18 sends all ten counters, including CLASH_RESOLVE and CHAIN_TOOLONG.
    for c in CtCounter::ALL {
        assert!(cpus[0].get(c).is_some(), "{c:?}");
    }
}

#[test]
fn eperm_replies_are_permission_errors() {
    let e = decode_stats(
        &data("linux-6.18.44-eperm/get_stats.bin"),
        seq("linux-6.18.44-eperm/get_stats.seq"),
    )
    .unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    assert!(e.to_string().contains("Operation not permitted"), "{e}");
    let mut cpus = Vec::new();
    let e = decode_stats_cpu(
        &data("linux-6.18.44-eperm/get_stats_cpu.bin"),
        seq("linux-6.18.44-eperm/get_stats_cpu.seq"),
        &mut cpus,
    )
    .unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
}

#[test]
fn proc_stat_of_this_kernel_agrees_with_netlink() {
    let mut cpus = Vec::new();
    let entries = parse_stat(&data("linux-6.18.44-full/proc_net_stat_nf_conntrack"), &mut cpus).unwrap();
    assert_eq!(entries, Some(50));
    assert_eq!(cpus.len(), 2);
    assert_eq!(cpus[0].get(CtCounter::Drop), Some(10));
    assert_eq!(cpus[0].get(CtCounter::ClashResolve), Some(0));
    assert_eq!(cpus[0].get(CtCounter::ChainTooLong), Some(0));

    let mut from_netlink = Vec::new();
    decode_stats_cpu(
        &data("linux-6.18.44-full/get_stats_cpu.bin"),
        seq("linux-6.18.44-full/get_stats_cpu.seq"),
        &mut from_netlink,
    )
    .unwrap();
    for (p, n) in cpus.iter().zip(&from_netlink) {
        for c in [
            CtCounter::Drop,
            CtCounter::EarlyDrop,
            CtCounter::InsertFailed,
            CtCounter::Invalid,
        ] {
            assert_eq!(p.get(c), n.get(c), "{c:?}");
        }
    }
}

#[test]
fn proc_stat_of_linux_5_10_is_read_by_name() {
    // Captured in a qemu VM booting Debian's 5.10 kernel (tests/data/README.md).
    let mut cpus = Vec::new();
    let entries = parse_stat(&data("linux-5.10.0-32-cloud/proc_net_stat_nf_conntrack"), &mut cpus).unwrap();
    assert_eq!(entries, Some(28));
    assert_eq!(cpus.len(), 2);
    // 5.10 has clashres, but chainlength came only in 5.15: its delete_list column in
    // the same position must not be read as chain_too_long.
    assert_eq!(cpus[0].get(CtCounter::ClashResolve), Some(0));
    assert_eq!(cpus[0].get(CtCounter::ChainTooLong), None);
    assert_eq!(cpus[1].get(CtCounter::Drop), Some(0));
}

#[test]
fn proc_stat_old_layout_is_read_by_name() {
    let mut cpus = Vec::new();
    let entries = parse_stat(&data("linux-5.8-layout/proc_net_stat_nf_conntrack"), &mut cpus).unwrap();
    assert_eq!(entries, Some(50));
    assert_eq!(cpus[0].get(CtCounter::Drop), Some(10));
    // Before 5.9 there was no clashres/chainlength: they must be absent, not misread
    // from the `searched`/`delete_list` columns in the same positions.
    assert_eq!(cpus[0].get(CtCounter::ClashResolve), None);
    assert_eq!(cpus[0].get(CtCounter::ChainTooLong), None);
}

/// Every prefix and many single-byte corruptions of every capture: no panic.
#[test]
fn truncated_and_corrupted_input_never_panics() {
    let nl = [
        ("linux-6.18.44-full/get_stats.bin", "linux-6.18.44-full/get_stats.seq"),
        (
            "linux-6.18.44-full/get_stats_cpu.bin",
            "linux-6.18.44-full/get_stats_cpu.seq",
        ),
        ("linux-6.18.44-eperm/get_stats.bin", "linux-6.18.44-eperm/get_stats.seq"),
    ];
    let mut cpus: Vec<CtCpuStats> = Vec::new();
    for (bin, s) in nl {
        let bytes = data(bin);
        let s = seq(s);
        for len in 0..bytes.len() {
            let _ = decode_stats(&bytes[..len], s);
            let _ = decode_stats_cpu(&bytes[..len], s, &mut cpus);
        }
        for i in 0..bytes.len() {
            for v in [0u8, 0xff, 0x01, 0x80] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = decode_stats(&b, s);
                let _ = decode_stats_cpu(&b, s, &mut cpus);
            }
        }
        // A truncated datagram is an error, not a silently short reply.
        if bin.ends_with("get_stats.bin") && !bin.contains("eperm") {
            assert!(decode_stats(&bytes[..bytes.len() - 2], s).is_err());
        }
    }
    for file in [
        "linux-6.18.44-full/proc_net_stat_nf_conntrack",
        "linux-5.10.0-32-cloud/proc_net_stat_nf_conntrack",
        "linux-5.8-layout/proc_net_stat_nf_conntrack",
    ] {
        let bytes = data(file);
        for len in 0..bytes.len() {
            let _ = parse_stat(&bytes[..len], &mut cpus);
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] = b'z';
            let _ = parse_stat(&b, &mut cpus);
        }
        // A row cut in the middle has fewer fields than the header: an error.
        let cut = bytes.len() - 20;
        assert!(parse_stat(&bytes[..cut], &mut cpus).is_err());
    }
}

mod sockets {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};

    use netpressure_exporter::netlink::sock_diag::{decode_dump, state, TcpSock};
    use netpressure_exporter::procfs::net::{for_each_pair, parse_sockstat, parse_softnet, SockStat};
    use netpressure_exporter::source::netstat::{extract, FIELDS_LEN};
    use netpressure_exporter::source::remotes::tally;

    use super::{data, seq};

    const DIR: &str = "linux-6.18.44-sockets";
    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn dump(name: &str) -> Vec<TcpSock> {
        let mut socks = Vec::new();
        let done = decode_dump(
            "test",
            &data(&format!("{DIR}/{name}.bin")),
            seq(&format!("{DIR}/{name}.seq")),
            &mut |s| socks.push(*s),
        )
        .unwrap();
        assert!(done);
        socks
    }

    #[test]
    fn listen_dump_has_queue_and_limit() {
        let socks = dump("listen");
        assert_eq!(socks.len(), 4);
        assert!(socks.iter().all(|s| s.state == state::LISTEN && s.local == LOOPBACK));
        let l7001 = socks.iter().find(|s| s.local_port == 7001).unwrap();
        assert_eq!((l7001.rqueue, l7001.wqueue), (5, 4));
        let l7004 = socks.iter().find(|s| s.local_port == 7004).unwrap();
        assert_eq!((l7004.rqueue, l7004.wqueue), (0, 16));
    }

    #[test]
    fn syn_recv_dump_has_the_half_open_clients() {
        let socks = dump("syn_recv");
        assert_eq!(socks.len(), 3);
        assert!(socks.iter().all(|s| s.state == state::SYN_RECV && s.local_port == 7002));
    }

    #[test]
    fn ephemeral_dump_tallies_per_remote() {
        let mut counts = HashMap::new();
        for s in dump("ephemeral") {
            assert!((40000..=40999).contains(&s.local_port), "the kernel filter kept {s:?}");
            tally(&mut counts, &s);
        }
        assert_eq!(counts[&(LOOPBACK, 7003)], [20, 0, 0]);
        assert_eq!(counts[&(LOOPBACK, 7001)], [0, 5, 0]);
        assert_eq!(counts[&(LOOPBACK, 7002)], [0, 3, 0]);
        assert_eq!(counts[&(LOOPBACK, 7004)], [0, 2, 0]);
        assert_eq!(counts.len(), 4);
    }

    #[test]
    fn netstat_and_snmp_fields_by_name() {
        let mut v = [None; FIELDS_LEN];
        extract(&data(&format!("{DIR}/proc_net_netstat")), &mut v).unwrap();
        extract(&data(&format!("{DIR}/proc_net_snmp")), &mut v).unwrap();
        // FIELDS order: ListenOverflows, ListenDrops, ReqQFullDrop, ReqQFullDoCookies,
        // SyncookiesSent/Recv/Failed, TimeWaitOverflow, TWRecycled, then Tcp ActiveOpens,
        // PassiveOpens, AttemptFails, EstabResets.
        assert_eq!(v[0], Some(3));
        assert_eq!(v[1], Some(3));
        assert_eq!(v[9], Some(33), "8 + 3 + 20 + 2 clients");
        assert!(v.iter().all(Option::is_some));
    }

    #[test]
    fn sockstat_and_softnet() {
        let mut st = SockStat::default();
        parse_sockstat(&data(&format!("{DIR}/proc_net_sockstat")), &mut st);
        parse_sockstat(&data(&format!("{DIR}/proc_net_sockstat6")), &mut st);
        assert_eq!(st.tcp_inuse, Some(21));
        assert_eq!(st.tcp_tw, Some(20));
        assert_eq!(st.tcp_orphan, Some(147));
        assert_eq!(st.tcp6_inuse, Some(0));
        let mut rows = Vec::new();
        parse_softnet(&data(&format!("{DIR}/proc_net_softnet_stat")), &mut rows).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].cpu, rows[1].cpu), (0, 1));
        assert_eq!(rows[0].dropped + rows[1].dropped, 0);
    }

    #[test]
    fn truncated_and_corrupted_input_never_panics() {
        for name in ["listen", "syn_recv", "ephemeral"] {
            let bytes = data(&format!("{DIR}/{name}.bin"));
            let s = seq(&format!("{DIR}/{name}.seq"));
            let mut sink = |_: &TcpSock| {};
            for len in 0..bytes.len() {
                let _ = decode_dump("test", &bytes[..len], s, &mut sink);
            }
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= 0xff;
                let _ = decode_dump("test", &b, s, &mut sink);
            }
            assert!(decode_dump("test", &bytes[..bytes.len() - 8], s, &mut sink).is_err());
        }
        for name in [
            "proc_net_netstat",
            "proc_net_snmp",
            "proc_net_softnet_stat",
            "proc_net_sockstat",
        ] {
            let bytes = data(&format!("{DIR}/{name}"));
            let mut rows = Vec::new();
            for len in 0..bytes.len() {
                let _ = for_each_pair(&bytes[..len], |_, _, _| {});
                let _ = parse_softnet(&bytes[..len], &mut rows);
                parse_sockstat(&bytes[..len], &mut SockStat::default());
            }
        }
        // A value line cut short no longer matches its header: an error, not a misread.
        let netstat = data(&format!("{DIR}/proc_net_netstat"));
        let cut = netstat.iter().position(|b| *b == b'\n').unwrap() + 40;
        assert!(for_each_pair(&netstat[..cut], |_, _, _| {}).is_err());
    }
}

/// A ctnetlink table dump (tests/data/linux-6.18.44-ctdump: TCP held and closed, IPv6,
/// UDP with and without a reply, one ICMP echo), broken down and checked against what
/// `conntrack -L` printed for the same table at the same moment.
#[test]
fn a_table_dump_breaks_down_as_conntrack_lists_it() {
    use netpressure_exporter::netlink::ctnetlink::decode_entry;
    use netpressure_exporter::netlink::{for_each_msg, Msg};
    use netpressure_exporter::source::breakdown::Tally;
    use std::collections::BTreeMap;

    let dump = data("linux-6.18.44-ctdump/dump.bin");
    let s = seq("linux-6.18.44-ctdump/dump.seq");
    let mut tally = Tally::default();
    let mut done = false;
    for_each_msg("test", &dump, s, |m| {
        match m {
            Msg::Data {
                message_type: 0x0100,
                payload,
            } => tally.add(&decode_entry(payload).unwrap().unwrap()),
            Msg::Done => done = true,
            _ => {}
        }
        Ok(())
    })
    .unwrap();
    assert!(done);

    // What conntrack -L said: protocol and state (TCP state, else the flags), source,
    // destination and port of each entry's original direction.
    let listed = String::from_utf8(data("linux-6.18.44-ctdump/conntrack_L.txt")).unwrap();
    let mut states: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut sources: BTreeMap<String, u64> = BTreeMap::new();
    let mut destinations: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for line in listed.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let field = |k: &str| words.iter().find_map(|w| w.strip_prefix(k)).unwrap_or("0").to_string();
        let proto = words[0].to_string();
        let state = if proto == "tcp" {
            words[3].to_ascii_lowercase()
        } else if line.contains("[ASSURED]") {
            "assured".into()
        } else if line.contains("[UNREPLIED]") {
            "unreplied".into()
        } else {
            "replied".into()
        };
        *states.entry((proto.clone(), state)).or_default() += 1;
        *sources.entry(field("src=")).or_default() += 1;
        *destinations.entry((proto, field("dst="), field("dport="))).or_default() += 1;
    }
    let r = tally.rank(100);
    assert_eq!(r.total, 16);
    assert_eq!(r.total, listed.lines().count() as u64);
    let got: BTreeMap<(String, String), u64> = r
        .states
        .iter()
        .map(|((p, st), n)| ((p.to_string(), st.to_string()), *n))
        .collect();
    assert_eq!(got, states);
    let got: BTreeMap<String, u64> = r.sources.iter().map(|(a, n)| (a.to_string(), *n)).collect();
    assert_eq!(got, sources);
    let got: BTreeMap<(String, String, String), u64> = r
        .destinations
        .iter()
        .map(|((p, a, port), n)| {
            let proto = netpressure_exporter::source::breakdown::protocol_label(*p).to_string();
            ((proto, a.to_string(), port.to_string()), *n)
        })
        .collect();
    assert_eq!(got, destinations);
    assert_eq!((r.other_sources, r.other_destinations), (0, 0));
}

#[test]
fn a_table_dump_cut_anywhere_decodes_or_errs_without_panicking() {
    use netpressure_exporter::netlink::ctnetlink::decode_entry;
    use netpressure_exporter::netlink::{for_each_msg, Msg};
    let dump = data("linux-6.18.44-ctdump/dump.bin");
    let s = seq("linux-6.18.44-ctdump/dump.seq");
    for cut in 0..dump.len() {
        let mut bytes = dump[..cut].to_vec();
        let _ = for_each_msg("test", &bytes, s, |m| {
            if let Msg::Data { payload, .. } = m {
                let _ = decode_entry(payload);
            }
            Ok(())
        });
        // Flip one byte as well.
        if let Some(b) = bytes.last_mut() {
            *b ^= 0xff;
        }
        let _ = for_each_msg("test", &bytes, s, |m| {
            if let Msg::Data { payload, .. } = m {
                let _ = decode_entry(payload);
            }
            Ok(())
        });
    }
}

#[test]
fn a_captured_address_dump_lists_every_address_of_the_namespace() {
    use netpressure_exporter::netlink::route::decode;
    let bytes = data("linux-6.18.44-rtaddr/getaddr.bin");
    let mut addrs = Vec::new();
    let done = decode(&bytes, seq("linux-6.18.44-rtaddr/getaddr.seq"), &mut addrs).unwrap();
    assert!(done, "the dump ends with NLMSG_DONE");
    let mut got: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "10.77.5.1",
            "127.0.0.1",
            "::1",
            "fd00:77::1",
            "fe80::5cb8:c3ff:fe69:7607",
            "fe80::e8f7:d9ff:fe18:27fe"
        ]
    );
    // Cut anywhere: decoded or refused, never a panic.
    for cut in 0..bytes.len() {
        let _ = decode(&bytes[..cut], 4242, &mut Vec::new());
    }
}

/// A guest with 64 CPUs booted of 128 possible and CPUs 7 and 33 then taken offline
/// (tests/vm/node-shape.sh, Linux 6.1): softnet_stat has a row per online CPU, numbered
/// by its last column, and conntrack's stat file a row per possible CPU. Both are past a
/// page (7.2 KiB and 20 KiB).
#[test]
fn per_cpu_files_of_a_node_with_offline_and_impossible_cpus() {
    use netpressure_exporter::procfs::net::parse_softnet;
    use netpressure_exporter::procfs::parse::cpu_list;
    const DIR: &str = "linux-6.1.0-50-cloud-64of128";
    let cpus = String::from_utf8(data(&format!("{DIR}/cpus"))).unwrap();
    let mut lines = cpus.lines();
    let online = cpu_list(lines.next().unwrap().as_bytes(), 8192).unwrap();
    let possible = cpu_list(lines.next().unwrap().as_bytes(), 8192).unwrap();
    assert_eq!((online.len(), possible.len()), (62, 128));

    let softnet = data(&format!("{DIR}/proc_net_softnet_stat"));
    assert!(softnet.len() > 4096);
    let mut rows = Vec::new();
    parse_softnet(&softnet, &mut rows).unwrap();
    let numbered: Vec<u16> = rows.iter().map(|r| r.cpu as u16).collect();
    assert_eq!(numbered, online, "rows are the online CPUs, by their own column");
    assert_eq!(rows[7].cpu, 8, "CPU 7 is offline: the eighth row is CPU 8's");

    let stat = data(&format!("{DIR}/proc_net_stat_nf_conntrack"));
    assert!(stat.len() > 4096);
    let mut rows = Vec::new();
    // The node's table as `conntrack -C` counted it at the capture.
    assert_eq!(parse_stat(&stat, &mut rows).unwrap(), Some(100_124));
    assert_eq!(rows.len(), possible.len(), "a row per possible CPU, offline or not");
    // conntrack -S of the same moment: a line per possible CPU too.
    let s = String::from_utf8(data(&format!("{DIR}/conntrack_S.txt"))).unwrap();
    assert_eq!(s.lines().filter(|l| l.starts_with("cpu=")).count(), 128);
}
