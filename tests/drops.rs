//! The kernel's drop reasons, provoked for real in namespaces the tests make: a listener
//! that never accepts, a full conntrack table, an input backlog over
//! `netdev_max_backlog`, a SYN flood with syncookies off. Each count is held against the
//! kernel's own counter of the same event where one exists.
//!
//! These tests run one at a time: every exporter loads its own program and sees every
//! namespace, and the backlog test lowers a global limit.

#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{
    connect_many, listen_with_backlog, metric, pod_cgroup_layout, scrape_until, veth, Cgroup, ConntrackMaxGuard,
    Exporter, Flows, GlobalSysctlGuard, Killed, Netns,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const DROPS: &str = "netpressure_packet_drops_total";

/// A `TcpExt` counter of `/proc/net/netstat` in `ns`, straight from the kernel.
fn tcp_ext(ns: &Netns, field: &str) -> u64 {
    let out = ns.sh("cat /proc/net/netstat");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let i = names.split_whitespace().position(|n| n == field).unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Polls `f` until it holds, or panics after 10 s saying what was awaited.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The drop series of one namespace (`netns="…"` plus its pod labels, if any), by reason.
fn drops_of(body: &str, netns_label: &str) -> Vec<(String, f64)> {
    let prefix = format!("{DROPS}{{{netns_label},reason=\"");
    body.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (reason, value) = rest.split_once("\"} ").unwrap();
            (reason.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// A pod-like namespace: a process in a kubepods cgroup and the kubelet's log directory
/// for it, so that the exporter labels it `namespace="shop",pod=NAME`.
struct Pod {
    ns: Netns,
    _cg: Cgroup,
    _process: Killed,
    logs: std::path::PathBuf,
}

impl Pod {
    fn new(tag: &str, name: &str) -> Self {
        let logs = std::env::temp_dir().join(format!("np-drop-pod-logs-{}", std::process::id()));
        std::fs::create_dir_all(&logs).unwrap();
        let ns = Netns::new(tag);
        let (root, rel, uid) = pod_cgroup_layout();
        let process = Killed(ns.cmd("sleep").arg("120").stdin(Stdio::null()).spawn().unwrap());
        let cg = Cgroup::create(&root, &rel);
        cg.add(process.0.id());
        std::fs::create_dir_all(logs.join(format!("shop_{name}_{uid}"))).unwrap();
        Self {
            ns,
            _cg: cg,
            _process: process,
            logs,
        }
    }

    fn flag(&self) -> String {
        format!("--path.pod-logs={}", self.logs.display())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

/// The accept queue overflows when the handshake's last ACK finds it full: six
/// connections wait in SYN_RECV (their ACKs dropped by a rule) while five fill the
/// queue; once the rule goes, each SYN-ACK the listener retransmits draws an ACK, and
/// every ACK past the queue's room is dropped with `tcp_listen_overflow`. No SYN arrives
/// while the queue is full, so the kernel's `ListenOverflows` counts exactly these drops
/// (a SYN refused for a full queue also counts there, but is freed as consumed, with no
/// reason: see docs/runbooks/NetpressureListenQueueOverflow.md). The count must land on the pod, with its
/// pod labels, and an idle namespace beside it has no drop series at all.
#[test]
fn a_listener_that_never_accepts_drops_with_tcp_listen_overflow_on_its_pod() {
    let _s = serial();
    let home = Netns::new("drhome");
    let pod = Pod::new("drpod", "api-0");
    let quiet = Netns::new("drquiet");
    let _quiet_process = Killed(quiet.cmd("sleep").arg("120").stdin(Stdio::null()).spawn().unwrap());
    let exp = Exporter::start(&home, &[&pod.flag(), "--netns.interval=1s"]);
    let pod_label = pod.ns.label(r#"namespace="shop",pod="api-0""#);
    scrape_until(&exp, "the pod and the quiet namespace sampled", |b| {
        metric(b, "netpressure_tcp_sockets_in_use", &pod_label).is_some()
            && metric(b, "netpressure_tcp_sockets_in_use", &quiet.label("")).is_some()
    });

    const PORT: u16 = 7100;
    let (listener, held) = pod.ns.enter(|| {
        let l = listen_with_backlog(PORT, 8);
        let c = connect_many(PORT, 5, Duration::from_secs(2));
        (l, c)
    });
    assert_eq!(held.len(), 5);
    pod.ns.sh(&format!(
        "nft add table inet acks && nft add chain inet acks out '{{ type filter hook output priority 0; }}' \
         && nft add rule inet acks out tcp dport {PORT} 'tcp flags & (syn | ack) == ack' drop"
    ));
    // The clients see the SYN-ACK and are connected; the listener holds six requests.
    let waiting = pod.ns.enter(|| connect_many(PORT, 6, Duration::from_secs(2)));
    assert_eq!(waiting.len(), 6);
    pod.ns.sh("nft delete table inet acks");
    wait_for("the listener's first overflow", || {
        tcp_ext(&pod.ns, "ListenOverflows") >= 1
    });
    let before = tcp_ext(&pod.ns, "ListenOverflows");
    let body = scrape_until(&exp, "tcp_listen_overflow drops on the pod", |b| {
        metric(b, DROPS, &format!(r#"{pod_label},reason="tcp_listen_overflow""#)).unwrap_or(0.0) >= before as f64
    });
    let after = tcp_ext(&pod.ns, "ListenOverflows");
    let served = metric(&body, DROPS, &format!(r#"{pod_label},reason="tcp_listen_overflow""#)).unwrap();
    assert!(
        (before as f64..=after as f64).contains(&served),
        "served {served}, the kernel's ListenOverflows went from {before} to {after} around the scrape"
    );
    assert!(
        drops_of(&body, &quiet.label("")).is_empty(),
        "an idle namespace has drop series"
    );
    drop((listener, held, waiting));
}

/// A full conntrack table drops every new flow's first packet with `netfilter_drop`, and
/// conntrack counts each such packet in its own `drop` counter: the two must be equal,
/// exactly, once the failed connections have given up (both are counted in the same
/// code path, packet by packet, and the namespace has no rule that drops).
#[test]
fn a_full_conntrack_table_drops_with_netfilter_drop_as_conntrack_counts_them() {
    let _s = serial();
    const MAX: u64 = 40;
    let _max = ConntrackMaxGuard::set(MAX);
    let ns = Netns::with_conntrack("drct");
    let exp = Exporter::start(&ns, &["--sample.counter-interval=1s", "--no-collector.netns"]);
    let flows = Flows::open(&ns, 7200, MAX as usize + 10, Duration::from_millis(300));
    assert!(flows.failed > 0, "the table never filled ({} opened)", flows.opened);
    let label = ns.label("");
    let body = scrape_until(&exp, "netfilter_drop equal to conntrack's drop counter", |b| {
        let ct = metric(b, "netpressure_conntrack_drop_total", &label).unwrap_or(0.0);
        ct > 0.0 && metric(b, DROPS, &format!(r#"{label},reason="netfilter_drop""#)) == Some(ct)
    });
    // Nothing else on the namespace's side dropped for a reason of its own making.
    let reasons: Vec<String> = drops_of(&body, &label).into_iter().map(|r| r.0).collect();
    assert!(reasons.contains(&"netfilter_drop".to_string()), "{reasons:?}");
    drop(flows);
}

/// Packets over a CPU's input backlog (`netdev_max_backlog`, lowered to 1 here) are
/// dropped with `cpu_backlog`, on the namespace whose device received them. Receive
/// Packet Steering on the receiving veth moves its packets to CPU 0's backlog while the
/// sender runs on CPU 1, so that the queue builds (without it, veth hands each packet to
/// the backlog and drains it before the next). `softnet_stat` counts the same drops for
/// the whole node: ours must be nearly all of them (the node's other traffic can drop
/// at a backlog of 1 too; one run saw 29,500 of 29,505).
#[test]
fn an_input_backlog_over_netdev_max_backlog_drops_with_cpu_backlog_on_the_receiver() {
    let _s = serial();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test steers packets from one CPU to another: it needs 2 CPUs"
    );
    let (tx, rx) = (Netns::new("drtx"), Netns::new("drrx"));
    veth(&tx, "10.78.0.1", &rx, "10.78.0.2", "dr");
    rx.sh("echo 1 > /sys/class/net/npdrb/queues/rx-0/rps_cpus");
    let exp = Exporter::start(&rx, &["--no-collector.netns"]);
    let softnet_dropped = || -> u64 {
        std::fs::read_to_string("/proc/net/softnet_stat")
            .unwrap()
            .lines()
            .map(|l| u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap())
            .sum()
    };
    let (before, after) = {
        let _backlog = GlobalSysctlGuard::set("/proc/sys/net/core/netdev_max_backlog", "netdev-max-backlog", 1);
        let before = softnet_dropped();
        tx.enter(|| {
            // SAFETY: pins only this thread, to CPU 1.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(1, &mut set);
                assert_eq!(libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set), 0);
            }
            let s = std::net::UdpSocket::bind("10.78.0.1:0").unwrap();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(1) {
                for _ in 0..100 {
                    let _ = s.send_to(&[0u8; 64], "10.78.0.2:9");
                }
            }
        });
        (before, softnet_dropped())
    };
    let node = after - before;
    assert!(
        node > 100,
        "the backlog dropped only {node} packets: the flood did not build a queue"
    );
    let label = rx.label("");
    let body = scrape_until(&exp, "cpu_backlog drops on the receiver", |b| {
        metric(b, DROPS, &format!(r#"{label},reason="cpu_backlog""#)).unwrap_or(0.0) as u64 >= node * 99 / 100
    });
    let served = metric(&body, DROPS, &format!(r#"{label},reason="cpu_backlog""#)).unwrap() as u64;
    assert!(
        served <= node,
        "served {served}, softnet_stat counted {node} on the whole node"
    );
}

/// A full SYN queue with syncookies off: the kernel refuses the SYN
/// (`TCPReqQFullDrop`), but frees it as consumed (tcp_rcv_state_process hands the SYN to
/// conn_request and then calls consume_skb whatever it decided), so 6.18 records no drop
/// reason for it. The clients are in a namespace of their own, on a veth, whose rule
/// drops the server's SYN-ACKs, and the exporter in a third: the server's namespace sees
/// nothing but SYNs. Were a reason recorded per refused SYN, one of the server's reasons
/// would rise by as many; none may rise by half of them (a stray packet of the new link
/// may still drop). Evidence that the map was read: a marker drop before the flood (a
/// datagram to a closed port, `no_socket`), the rule's drops (`netfilter_drop`, on the
/// clients' side) after it.
#[test]
fn a_syn_flood_with_syncookies_off_records_no_reason_for_the_refused_syns() {
    let _s = serial();
    let home = Netns::new("drsynh");
    let (client, server) = (Netns::new("drsync"), Netns::new("drsyns"));
    for ns in [&client, &server] {
        // No IPv6 neighbour discovery on the new link to drop packets of its own.
        ns.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    }
    veth(&client, "10.79.0.1", &server, "10.79.0.2", "ds");
    server.sh("sysctl -qw net.ipv4.tcp_syncookies=0");
    client.sh(
        "nft add table inet synack && nft add chain inet synack in '{ type filter hook input priority 0; }' \
         && nft add rule inet synack in 'tcp flags & (syn | ack) == syn | ack' counter drop",
    );
    let exp = Exporter::start(&home, &["--netns.interval=1s"]);
    let server_label = server.label("");
    server.enter(|| {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"marker", "127.0.0.1:9").unwrap();
    });
    let no_socket = format!(r#"{server_label},reason="no_socket""#);
    let body = scrape_until(&exp, "the marker drop served", |b| {
        metric(b, DROPS, &no_socket).is_some()
    });
    let before = drops_of(&body, &server_label);

    const PORT: u16 = 7300;
    let listener = server.enter(|| listener_with_backlog("10.79.0.2", PORT, 4));
    client.enter(|| {
        let addr: std::net::SocketAddr = ([10, 79, 0, 2], PORT).into();
        for _ in 0..30 {
            assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err());
        }
    });
    let refused = tcp_ext(&server, "TCPReqQFullDrop");
    assert!(refused >= 10, "the SYN queue refused only {refused} SYNs");
    let out = client.sh("nft list table inet synack");
    let text = String::from_utf8(out.stdout).unwrap();
    let counted = text.split("counter packets ").nth(1).unwrap();
    let by_rule: f64 = counted.split_whitespace().next().unwrap().parse().unwrap();
    let client_label = client.label("");
    let body = scrape_until(&exp, "the clients' rule drops served", |b| {
        metric(b, DROPS, &format!(r#"{client_label},reason="netfilter_drop""#)).unwrap_or(0.0) >= by_rule
    });
    let after = drops_of(&body, &server_label);
    for (reason, n) in &after {
        let was = before.iter().find(|(r, _)| r == reason).map_or(0.0, |(_, n)| *n);
        assert!(
            n - was < refused as f64 / 2.0,
            "the server recorded {} {reason} drops for {refused} refused SYNs (before: {before:?}, after: {after:?})",
            n - was
        );
    }
    drop(listener);
}

/// A listener on `addr:port` with `backlog`: std's TcpListener asks for 128, and a
/// second listen() on a listening socket sets the backlog anew.
fn listener_with_backlog(addr: &str, port: u16, backlog: i32) -> std::net::TcpListener {
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind((addr, port)).unwrap();
    // SAFETY: listen() on a socket this function owns.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), backlog) }, 0);
    l
}

/// Without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN the program cannot load: the source is
/// down, says why once, and every other source serves as before.
#[test]
fn without_the_capability_the_source_is_down_and_the_rest_serves() {
    let _s = serial();
    let ns = Netns::new("drcap");
    let exp = Exporter::start_with(
        &ns,
        Some("cap_bpf,cap_perfmon,cap_sys_admin"),
        &["--no-collector.netns"],
    );
    let body = scrape_until(&exp, "the source's first sample", |b| {
        metric(b, "netpressure_source_up", r#"source="drop_reasons""#).is_some()
            && metric(b, "netpressure_source_up", r#"source="sockstat""#).is_some()
    });
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="drop_reasons""#),
        Some(0.0)
    );
    for source in ["conntrack", "netstat", "sockstat", "listeners", "filefd"] {
        assert_eq!(
            metric(&body, "netpressure_source_up", &format!(r#"source="{source}""#)),
            Some(1.0),
            "{source}"
        );
    }
    assert!(!body.contains(DROPS));
    let (code, log) = exp.stop();
    assert_eq!(code, Some(0), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("source drop_reasons is down"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("CAP_BPF"), "{}", warnings[0]);
}

/// The program and its maps belong to the exporter's process: once it exits, the kernel
/// has none of them (nothing pinned, nothing left attached).
#[test]
fn nothing_stays_loaded_after_the_exporter_exits() {
    let _s = serial();
    let ns = Netns::new("drexit");
    let exp = Exporter::start(&ns, &["--no-collector.netns"]);
    scrape_until(&exp, "the drop map served", |b| {
        metric(b, "netpressure_drop_reasons_map_entries_limit", &ns.label("")).is_some()
    });
    // The program's id, from the exporter's descriptors (a link's fdinfo names it).
    let ids = fdinfo_ids(exp.pid(), "prog_id:");
    assert!(!ids.is_empty(), "no BPF program among the exporter's descriptors");
    let shown = |id: &str| {
        Command::new("bpftool")
            .args(["prog", "show", "id", id])
            .output()
            .expect("bpftool (scripts/test.sh installs it)")
            .status
            .success()
    };
    assert!(ids.iter().all(|id| shown(id)));
    let (code, _) = exp.stop();
    assert_eq!(code, Some(0));
    wait_for("the kernel to free the program", || ids.iter().all(|id| !shown(id)));
}

/// Every reason this kernel's BTF names, as bpftool reads the same BTF, decodes to its
/// name, lowercased without the prefix: no reason a drop can carry is left unnamed.
#[test]
fn every_reason_of_this_kernel_decodes_to_its_name_as_bpftool_reads_it() {
    let out =
        common::run(Command::new("bpftool").args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"]));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut members = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with('[') {
            inside = line.contains("ENUM 'skb_drop_reason' ");
            continue;
        }
        if inside {
            // "\t'SKB_DROP_REASON_NO_SOCKET' val=3"
            let (name, val) = line.trim().split_once(" val=").unwrap();
            members.push((name.trim_matches('\'').to_string(), val.parse::<i64>().unwrap()));
        }
    }
    assert!(members.len() > 20, "bpftool listed {} members", members.len());
    let data = std::fs::read("/sys/kernel/btf/vmlinux").unwrap();
    let found = netpressure_exporter::btf::enums(&data, &["skb_drop_reason", "skb_drop_reason_subsys"]).unwrap();
    let ours = found[0].clone().unwrap();
    assert_eq!(ours, members, "our reader and bpftool disagree");
    let names = netpressure_exporter::btf::DropReasons::new(&ours, found[1].as_deref().unwrap_or(&[]));
    let mut checked = 0;
    for (name, value) in &members {
        let Some(short) = name.strip_prefix("SKB_DROP_REASON_") else {
            continue;
        };
        if short == "MAX" || short == "SUBSYS_MASK" {
            continue;
        }
        assert_eq!(names.name(*value as u32), short.to_ascii_lowercase());
        checked += 1;
    }
    assert_eq!(checked, names.core_len());
    for reason in ["netfilter_drop", "tcp_listen_overflow", "cpu_backlog", "no_socket"] {
        assert!(
            members
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(&format!("SKB_DROP_REASON_{reason}"))),
            "{reason}"
        );
    }
}

/// The BPF object ids (`prog_id:`, `map_id:`) the descriptors of process `pid` hold, as
/// their fdinfo names them.
fn fdinfo_ids(pid: u32, field: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let text = std::fs::read_to_string(fd.unwrap().path()).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix(field))
                .map(|v| v.trim().to_string()),
        );
    }
    ids.sort();
    ids.dedup();
    ids
}

/// The namespace inodes in the keys of the exporter's `drops` map, as bpftool reads the
/// kernel's map.
fn map_inodes(pid: u32) -> Vec<u64> {
    let ids = fdinfo_ids(pid, "map_id:");
    let bpftool = |args: &[&str]| String::from_utf8(common::run(Command::new("bpftool").args(args)).stdout).unwrap();
    let id = ids
        .iter()
        .find(|id| bpftool(&["map", "show", "id", id]).contains("name drops"))
        .expect("the exporter holds its drops map");
    let dump = bpftool(&["-j", "map", "dump", "id", id]);
    // JSON: each element's key as bytes, then as bpftool formats it with the map's BTF:
    // {"cookie":C,"ino":I,"reason":R}.
    dump.split("\"formatted\":{\"key\":")
        .skip(1)
        .map(|rest| {
            let at = rest.find("\"ino\":").expect("a key with an inode") + 6;
            let digits: String = rest[at..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().unwrap()
        })
        .collect()
}

/// A network namespace held only by a thread of this test (discovery, which looks at
/// processes and bind mounts, never sees it) that drops `n` UDP datagrams to a closed
/// port (`no_socket`) and goes when the thread ends. Its inode.
fn drops_in_an_unseen_namespace(n: usize) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread, which ends after.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        // A child forked from this thread lives in its namespace.
        common::run(Command::new("ip").args(["link", "set", "lo", "up"]));
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..n {
            s.send_to(b"x", "127.0.0.1:9").unwrap();
        }
        std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
    })
    .join()
    .unwrap()
}

/// The kernel hands a freed namespace's inode to the next namespace made. A namespace
/// that dropped packets and went before discovery found it must not hand its drops to
/// that one (keyed by inode, it did: 7 reasons, 50 each, to a namespace that dropped
/// nothing). Keys carry the namespace's cookie, unique for the boot.
#[test]
fn a_new_namespace_given_a_dead_ones_inode_starts_with_no_drops() {
    use std::os::unix::fs::MetadataExt;
    let _s = serial();
    let home = Netns::new("drreuseh");
    let exp = Exporter::start(&home, &["--netns.interval=1s"]);
    let dead = drops_in_an_unseen_namespace(50);
    wait_for("the dead namespace's drops in the map", || {
        map_inodes(exp.pid()).contains(&dead)
    });
    // Namespaces made until one gets the freed inode (the kernel frees it a moment after
    // the namespace goes; the ones in between keep the lower gaps filled).
    let mut tries = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let reused = loop {
        let ns = Netns::new(&format!("drreuse{}", tries.len()));
        if std::fs::metadata(format!("/run/netns/{}", ns.name)).unwrap().ino() == dead {
            break ns;
        }
        assert!(Instant::now() < deadline, "no new namespace was given inode {dead}");
        tries.push(ns);
        std::thread::sleep(Duration::from_millis(100));
    };
    let own = reused.label("");
    let sampled = |b: &str| metric(b, "netpressure_tcp_sockets_in_use", &own).is_some();
    let body = scrape_until(&exp, "the namespace with the reused inode sampled", sampled);
    // Served from reads of the map made after it was sampled (the map is read once a
    // second, the own namespace's source served every 250 ms).
    let reads = |b: &str| metric(b, "netpressure_samples_total", r#"source="drop_reasons""#).unwrap_or(0.0);
    let first = reads(&body);
    let body = scrape_until(&exp, "two more reads of the map", |b| reads(b) >= first + 8.0);
    assert_eq!(
        drops_of(&body, &own),
        vec![],
        "the new namespace served a dead one's drops"
    );
    // And the dead one's keys are gone: its inode now names a namespace with another cookie.
    wait_for("the dead namespace's keys swept", || {
        !map_inodes(exp.pid()).contains(&dead)
    });
}

/// Namespaces that come and go between two discoveries (pods of a churning node) leave
/// keys in the map; the first discovery that starts after their drops and does not find
/// them has them swept, without the 30 s grace of a namespace not yet sampled (churning
/// namespaces filled the 4,096-key map that way).
#[test]
fn the_keys_of_namespaces_gone_unseen_are_swept_at_the_next_discovery() {
    let _s = serial();
    let home = Netns::new("drchurnh");
    let exp = Exporter::start(&home, &["--netns.interval=1s"]);
    let gone: Vec<u64> = (0..20).map(|_| drops_in_an_unseen_namespace(5)).collect();
    wait_for("their drops in the map", || {
        let keys = map_inodes(exp.pid());
        gone.iter().any(|i| keys.contains(i))
    });
    wait_for("their keys swept", || {
        let keys = map_inodes(exp.pid());
        !gone.iter().any(|i| keys.contains(i))
    });
}

/// A namespace that goes has its keys deleted from the kernel's map once the exporter
/// lets it go: the kernel hands a freed namespace's inode to the next one, which must
/// not start with the old one's counts.
#[test]
fn a_namespace_that_goes_has_its_keys_deleted_from_the_map() {
    use std::os::unix::fs::MetadataExt;
    let _s = serial();
    let home = Netns::new("drgoneh");
    let exp = Exporter::start(&home, &["--netns.interval=1s"]);
    let pod = Netns::new("drgone");
    let ino = std::fs::metadata(format!("/run/netns/{}", pod.name)).unwrap().ino();
    pod.enter(|| {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"marker", "127.0.0.1:9").unwrap();
    });
    let no_socket = format!(r#"{},reason="no_socket""#, pod.label(""));
    scrape_until(&exp, "the marker drop served", |b| {
        metric(b, DROPS, &no_socket).is_some()
    });
    assert!(
        map_inodes(exp.pid()).contains(&ino),
        "the namespace's key is in the map"
    );
    drop(pod);
    wait_for("the namespace's keys to leave the map", || {
        !map_inodes(exp.pid()).contains(&ino)
    });
}
