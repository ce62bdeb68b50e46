//! Every network namespace on the node: discovery, per-namespace series, pod
//! attribution from real cgroups, and churn. The exporter runs in a namespace of its own
//! and finds the others the tests make.
//!
//! These tests run one at a time (each exporter tracks every namespace on the machine,
//! so the churn test's descriptor count must not see the others' namespaces).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use common::{
    connect_many, listen_with_backlog, metric, pod_cgroup_layout, scrape_until, veth, Cgroup, Exporter, Flows, Killed,
    Netns,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const FAST: &[&str] = &["--netns.interval=1s", "--netns.scan-interval=10s", "--scan.interval=1s"];

#[test]
fn three_namespaces_each_with_their_own_numbers() {
    let _s = serial();
    let home = Netns::new("home");
    let exp = Exporter::start(&home, FAST);

    // A: conntrack entries. B: a listener with a full accept queue. C: TIME_WAIT sockets.
    // None has a process: each is held only by its `ip netns` bind mount.
    let a = Netns::with_conntrack("nsa");
    let _flows = Flows::open(&a, 8080, 20, Duration::from_secs(2));
    assert!(a.conntrack_count() >= 20);

    let b = Netns::new("nsb");
    // A pod-level sysctl: this namespace's own somaxconn.
    b.sh("sysctl -qw net.core.somaxconn=777");
    let _held = b.enter(|| {
        let l = listen_with_backlog(7200, 2);
        let c = connect_many(7200, 3, Duration::from_secs(1));
        (l, c)
    });
    // Backlog 2 holds three (the kernel admits until the queue exceeds the backlog).
    assert_eq!(_held.1.len(), 3, "three connections complete against backlog 2");

    let c = Netns::new("nsc");
    c.sh("sysctl -qw net.ipv4.tcp_tw_reuse=0");
    c.enter(|| common::client_closed_connections(7300, 50));
    // The kernel's own count, as the exporter reads it (sockstat's tw also counts
    // sockets still in the FIN_WAIT2 substate, which `ss state time-wait` leaves out).
    let kernel_tw = || -> f64 {
        let out =
            c.sh("awk '/^TCP:/ { for (i = 2; i < NF; i++) if ($i == \"tw\") print $(i + 1) }' /proc/net/sockstat");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    assert!(kernel_tw() >= 40.0);

    let queue = b.label(r#"address="127.0.0.1",port="7200""#);
    let somaxconn = r#"name="net.core.somaxconn""#;
    // The counts the kernel shows now, not when the test made them: a socket's last
    // FIN or a flow's entry can land a moment after the call that caused it returned.
    let body = scrape_until(&exp, "all three namespaces", |body| {
        let wanted = [
            ("netpressure_sysctl", b.label(somaxconn), 777.0),
            ("netpressure_conntrack_entries", a.label(""), a.conntrack_count() as f64),
            ("netpressure_tcp_listen_queue_length", queue.clone(), 3.0),
            ("netpressure_tcp_time_wait_sockets", c.label(""), kernel_tw()),
        ];
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(name, labels, v)| metric(body, name, labels) != Some(*v))
            .map(|(name, labels, v)| format!("{name}{{{labels}}} = {v}"))
            .collect();
        if !missing.is_empty() {
            eprintln!("still waiting for: {missing:?}");
        }
        missing.is_empty()
    });
    // Each namespace has its own numbers, not its neighbours'.
    // A new namespace starts with the kernel's default (SOMAXCONN, 4096 since 5.4),
    // whatever the node's own value is.
    assert_eq!(metric(&body, "netpressure_sysctl", &a.label(somaxconn)), Some(4096.0));
    assert_eq!(
        metric(&body, "netpressure_sysctl", &home.label(somaxconn)),
        Some(4096.0)
    );
    assert_eq!(metric(&body, "netpressure_conntrack_entries", &b.label("")), Some(0.0));
    assert_eq!(
        metric(&body, "netpressure_tcp_time_wait_sockets", &a.label("")),
        Some(0.0)
    );
    assert_eq!(metric(&body, "netpressure_tcp_listen_queue_limit", &queue), Some(2.0));
    assert!(metric(&body, "netpressure_tcp_listen_overflows_total", &b.label("")).is_some());
    // The node's initial namespace is `host`; the exporter's own is its inode.
    assert!(metric(&body, "netpressure_conntrack_entries_limit", r#"netns="host""#).is_some());
    assert!(metric(&body, "netpressure_tcp_sockets_in_use", &home.label("")).is_some());
    assert!(metric(&body, "netpressure_netns_sampled", "").unwrap() >= 4.0);
}

#[test]
fn pod_labels_come_from_real_cgroups_and_the_pod_log_directory() {
    let _s = serial();
    let home = Netns::new("podhome");
    let logs = std::env::temp_dir().join(format!("np-pod-logs-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let logs_flag = format!("--path.pod-logs={}", logs.display());
    let mut args = FAST.to_vec();
    args.push(&logs_flag);

    // One pod per cgroup layout the machine has: the systemd driver's slices on the
    // unified (v2) hierarchy, the cgroupfs driver's directories on a v1 one.
    let mut layouts: Vec<(PathBuf, String, &str)> = Vec::new();
    let v2 = if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Some(PathBuf::from("/sys/fs/cgroup"))
    } else {
        None
    };
    if let Some(root) = v2 {
        let uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
        let rel = format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-0123abcd.scope",
            uid.replace('-', "_")
        );
        layouts.push((root, rel, uid));
    }
    let v1 = PathBuf::from("/sys/fs/cgroup/pids");
    if v1.exists() {
        let uid = "6fa459ea-ee8a-3ca4-894e-db77e160355e";
        layouts.push((v1, format!("kubepods/burstable/pod{uid}/4567cdef"), uid));
    }
    assert!(!layouts.is_empty(), "no writable cgroup hierarchy found");

    let mut held = Vec::new();
    let mut expect = Vec::new();
    for (i, (root, rel, uid)) in layouts.iter().enumerate() {
        let ns = Netns::new(&format!("pod{i}"));
        let child = Killed(
            ns.cmd("sleep")
                .arg("120")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let cg = Cgroup::create(root, rel);
        cg.add(child.0.id());
        let name = format!("web-{i}");
        std::fs::create_dir_all(logs.join(format!("shop_{name}_{uid}"))).unwrap();
        expect.push(ns.label(&format!(r#"namespace="shop",pod="{name}""#)));
        held.push((child, cg, ns));
    }
    // A namespace with a process outside any pod gets no pod labels.
    let plain = Netns::new("nopod");
    let _plain_child = Killed(plain.cmd("sleep").arg("120").spawn().unwrap());

    let exp = Exporter::start(&home, &args);
    // Each namespace is sampled at its own phase of --netns.interval: wait for all.
    let body = scrape_until(&exp, "pod labels", |b| {
        expect
            .iter()
            .all(|l| metric(b, "netpressure_tcp_sockets_in_use", l).is_some())
            && metric(b, "netpressure_tcp_sockets_in_use", &plain.label("")).is_some()
    });
    assert_eq!(
        metric(&body, "netpressure_tcp_sockets_in_use", &plain.label("")),
        Some(0.0)
    );
    assert!(!body.contains(&format!("{},namespace=", plain.label(""))));
    drop(exp);
    drop(held);
    let _ = std::fs::remove_dir_all(&logs);
}

/// The `netns` labels of every namespace that exists now (bind mounts and processes).
fn live_netns_labels() -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/run/netns")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.extend(
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .map(|e| e.path().join("ns/net")),
    );
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| format!(r#"netns="{}""#, m.ino()))
        .collect()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[test]
fn namespace_churn_leaves_no_descriptors_and_no_series_behind() {
    let _s = serial();
    let home = Netns::new("churnhome");
    let exp = Exporter::start(&home, FAST);
    let pid = exp.pid();
    // Ready means the first complete round: every namespace the machine has is sampled
    // (its handles open) before the baseline is taken.
    let baseline = open_fds(pid);

    let mut gone = Vec::new();
    for round in 0..4 {
        let batch: Vec<Netns> = (0..50).map(|i| Netns::new(&format!("churn{round}-{i}"))).collect();
        // The exporter finds and samples them (discovery every second) before they go.
        scrape_until(&exp, "the batch to be sampled", |b| {
            metric(b, "netpressure_netns_sampled", "").unwrap() >= 50.0
        });
        gone.extend(batch.iter().map(|n| n.label("")));
        drop(batch);
    }
    // The next discovery drops them: both lanes let their handles go before their
    // series leave the snapshot.
    // (An inode may already belong to a namespace another test made since: a label of
    // a namespace that exists again is not stale.)
    let body = scrape_until(&exp, "the deleted namespaces' series gone", |b| {
        let live = live_netns_labels();
        gone.iter()
            .all(|label| !b.contains(label.as_str()) || live.contains(label))
    });
    let after = open_fds(pid);
    eprintln!("descriptors: {baseline} before the churn, {after} after");
    assert!(
        after <= baseline + 2,
        "descriptors: {baseline} before the churn, {after} after"
    );
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="conntrack""#),
        Some(1.0)
    );
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="listeners""#),
        Some(1.0)
    );
    let errors: f64 = ["conntrack", "netstat", "sockstat", "listeners", "remotes"]
        .iter()
        .map(|s| {
            metric(
                &body,
                "netpressure_netns_source_errors_total",
                &format!(r#"source="{s}""#),
            )
            .unwrap()
        })
        .sum();
    eprintln!("errors counted during churn: {errors}");
    let (code, log) = exp.stop();
    assert_eq!(code, Some(0));
    assert!(!log.contains("level=error"), "{log}");
}

/// The label the node's own namespace should get when the exporter runs in the test's
/// namespace: `host` where that is the initial namespace (its fixed inode on this
/// kernel), else its inode.
fn expected_own_label() -> String {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    if ino == 0xEFFF_FFF9 {
        "host".into()
    } else {
        ino.to_string()
    }
}

#[test]
fn unprivileged_the_nodes_namespace_is_still_host() {
    let _s = serial();
    // uid 65534 without capabilities: PID 1's and kthreadd's ns/net give EACCES.
    let port = 19_861;
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(common::EXPORTER)
    .args([
        &format!("--web.listen-address=127.0.0.1:{port}"),
        "--sample.interval=100ms",
    ]);
    let exp = Exporter::start_here(&mut cmd, port);
    let own = format!(r#"netns="{}""#, expected_own_label());
    let body = scrape_until(&exp, "the own namespace's sockets", |b| {
        metric(b, "netpressure_tcp_sockets_in_use", &own).is_some()
    });
    assert!(
        !body.contains(r#"netns="4026531833""#) || own.contains("4026531833"),
        "the node's namespace served by inode"
    );
}

#[test]
fn in_a_private_pid_namespace_the_pods_namespace_is_not_host() {
    let _s = serial();
    let ns = Netns::new("pidns");
    // As in a pod without hostPID: PID 1 is the container's init, in the pod's namespace.
    let mut cmd = ns.cmd("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(common::EXPORTER)
        .args([
            &format!("--web.listen-address=127.0.0.1:{}", common::PORT),
            "--sample.interval=100ms",
        ]);
    let exp = Exporter::start_cmd(&mut cmd);
    let body = scrape_until(&exp, "the own namespace's sockets", |b| {
        metric(b, "netpressure_tcp_sockets_in_use", &ns.label("")).is_some()
    });
    assert!(
        !body.contains(r#"netns="host""#),
        "a pod's namespace served as host:\n{body}"
    );
}

#[test]
fn an_idle_pod_namespace_costs_23_series_by_default() {
    let _s = serial();
    let home = Netns::new("budget-home");
    let idle = Netns::new("budget-idle");
    let count = |body: &str| {
        body.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&idle.label("")))
            .count()
    };
    let settled = |b: &str| {
        metric(b, "netpressure_sysctl", &idle.label(r#"name="net.core.somaxconn""#)).is_some()
            && metric(b, "netpressure_local_port_range_size", &idle.label("")).is_some()
    };
    let exp = Exporter::start(&home, FAST);
    let body = scrape_until(&exp, "the idle namespace in full", settled);
    let served: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&idle.label("")))
        .collect();
    assert_eq!(count(&body), 23, "{served:#?}");
    // The node-wide hash size is not repeated per pod; the own namespace has it.
    assert_eq!(metric(&body, "netpressure_conntrack_buckets", &idle.label("")), None);
    assert!(metric(&body, "netpressure_conntrack_buckets", &home.label("")).is_some());
    drop(exp);

    let mut all = FAST.to_vec();
    all.push("--netns.families=all");
    let exp = Exporter::start(&home, &all);
    let body = scrape_until(&exp, "the idle namespace in full", settled);
    assert!(count(&body) > 40, "{}", count(&body));
    drop(exp);

    let mut one = FAST.to_vec();
    one.push("--netns.families=netpressure_conntrack_entries");
    let exp = Exporter::start(&home, &one);
    let body = scrape_until(&exp, "the idle namespace's entries", |b| {
        metric(b, "netpressure_conntrack_entries_peak", &idle.label("")).is_some()
    });
    assert_eq!(count(&body), 2, "entries and its peak");
}

#[test]
fn per_cpu_conntrack_counters_are_the_nodes_and_pods_get_sums() {
    let _s = serial();
    let home = Netns::with_conntrack("percpu-home");
    let pod = Netns::with_conntrack("percpu-pod");
    let mut args = FAST.to_vec();
    args.push("--collector.conntrack.per-cpu");
    let exp = Exporter::start(&home, &args);
    // Per CPU in every pod would be pods x possible CPUs x 3 default families: 115,584
    // series at 301 namespaces and 128 possible CPUs (an 11.8 MB scrape).
    let body = scrape_until(&exp, "the pod's summed and the node's per-CPU counters", |b| {
        metric(b, "netpressure_conntrack_drop_total", &pod.label("")).is_some()
            && b.lines().any(|l| {
                l.starts_with("netpressure_conntrack_drop_total{")
                    && l.contains(&home.label(""))
                    && l.contains("cpu=\"")
            })
    });
    let per_cpu_in_pod: Vec<&str> = body
        .lines()
        .filter(|l| l.contains(&pod.label("")) && l.contains("cpu=\""))
        .collect();
    assert!(per_cpu_in_pod.is_empty(), "{per_cpu_in_pod:#?}");
    assert_eq!(
        metric(&body, "netpressure_conntrack_drop_total", &home.label("")),
        None,
        "the node's counters are per CPU only"
    );
}

/// The exporter in `home` (fast cadences) with RLIMIT_NOFILE `limit`, soft and hard.
fn start_with_nofile(home: &Netns, limit: u64) -> Exporter {
    let mut cmd = home.cmd("prlimit");
    cmd.arg(format!("--nofile={limit}:{limit}"))
        .args([
            "--",
            common::EXPORTER,
            "--web.listen-address=127.0.0.1:9861",
            "--sample.interval=100ms",
        ])
        .args(FAST);
    Exporter::start_cmd(&mut cmd)
}

#[test]
fn under_a_small_descriptor_limit_the_own_namespace_serves_and_the_rest_is_omitted() {
    let _s = serial();
    let home = Netns::new("fdbudget-home");
    let _many: Vec<Netns> = (0..60).map(|i| Netns::new(&format!("fdb{i}"))).collect();
    // `ulimit -n 256`, soft and hard: 11 other namespaces fit beside the 128 kept.
    let exp = start_with_nofile(&home, 256);
    let body = scrape_until(&exp, "the namespaces past the budget counted", |b| {
        metric(b, "netpressure_netns_omitted", "").unwrap_or(0.0) >= 48.0
    });
    let sampled = metric(&body, "netpressure_netns_sampled", "").unwrap();
    assert!((1.0..=11.0).contains(&sampled), "sampled {sampled}");
    for source in ["conntrack", "netstat", "sockstat", "listeners", "sysctl", "remotes"] {
        let up = metric(&body, "netpressure_source_up", &format!(r#"source="{source}""#));
        assert_eq!(up, Some(1.0), "{source}");
    }
    assert!(metric(&body, "netpressure_tcp_sockets_in_use", &home.label("")).is_some());
    // Scrapes are answered, and the process stays inside its limit.
    for _ in 0..20 {
        exp.scrape();
    }
    assert!(open_fds(exp.pid()) < 200, "{} descriptors", open_fds(exp.pid()));
    let (code, log) = exp.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("RLIMIT_NOFILE leaves descriptors for 11"), "{log}");
    assert_eq!(log.matches("RLIMIT_NOFILE leaves").count(), 1, "logged once: {log}");
}

/// `n` processes of user nobody, each in a network namespace of its own made by
/// `unshare -Urn` (no capability needed), killed on drop.
fn user_namespaces(n: usize) -> Vec<Killed> {
    (0..n)
        .map(|_| {
            Killed(
                std::process::Command::new("setpriv")
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                    .args(["unshare", "-Urn", "sleep", "120"])
                    .stdin(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_unprivileged_users_namespaces_do_not_crowd_out_a_pod() {
    let _s = serial();
    let home = Netns::new("crowd-home");
    let root = if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        PathBuf::from("/sys/fs/cgroup/unified")
    } else {
        PathBuf::from("/sys/fs/cgroup")
    };
    // 25 namespaces made by `unshare -Urn` as nobody, before the pod exists.
    let crowd = user_namespaces(25);
    let logs = std::env::temp_dir().join(format!("np-crowd-logs-{}", std::process::id()));
    let uid = "9c3a1b52-7d4e-4f60-8a1b-2c3d4e5f6a7b";
    std::fs::create_dir_all(logs.join(format!("shop_checkout_{uid}"))).unwrap();
    let logs_flag = format!("--path.pod-logs={}", logs.display());
    let mut args = FAST.to_vec();
    args.extend(["--netns.max=20", logs_flag.as_str()]);
    let exp = Exporter::start(&home, &args);
    scrape_until(&exp, "the crowd counted", |b| {
        metric(b, "netpressure_netns_omitted", "").unwrap_or(0.0) >= 5.0
    });

    // Then a pod starts: it takes a place from the crowd at the next discovery.
    let pod = Netns::new("crowd-pod");
    let child = Killed(pod.cmd("sleep").arg("120").stdin(Stdio::null()).spawn().unwrap());
    let rel = format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-4567.scope",
        uid.replace('-', "_")
    );
    let cg = Cgroup::create(&root, &rel);
    cg.add(child.0.id());
    let labels = pod.label(r#"namespace="shop",pod="checkout""#);
    let body = scrape_until(&exp, "the pod sampled", |b| {
        metric(b, "netpressure_tcp_sockets_in_use", &labels).is_some()
    });
    assert_eq!(metric(&body, "netpressure_netns_sampled", ""), Some(20.0));
    drop(exp);
    drop(child);
    drop(cg);
    drop(crowd);
    let _ = std::fs::remove_dir_all(&logs);
}

/// The network namespaces the process `pid` holds a descriptor of.
fn held_namespaces(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with("net:["))
        .collect()
}

/// The descriptor limit at which `others` namespaces beside those already on the machine
/// fit the exporter's budget, and not one more: a machine that already runs containers
/// must not take the test's room.
fn nofile_for(others: u64) -> u64 {
    use netpressure_exporter::sampler::discovery::{namespaces_within, FDS_PER_NAMESPACE, RESERVED_FDS};
    let mut found = std::collections::HashMap::new();
    netpressure_exporter::netns::discover(Path::new("/proc"), &mut found).unwrap();
    let nofile = RESERVED_FDS + FDS_PER_NAMESPACE * (found.len() as u64 + others);
    assert!(namespaces_within(nofile) >= found.len() + others as usize);
    nofile
}

#[test]
fn eighty_user_namespaces_within_the_descriptor_budget_are_sampled_then_released() {
    let _s = serial();
    let home = Netns::new("eighty-home");
    // 1,024 descriptors on an empty machine; more where other namespaces exist.
    let exp = start_with_nofile(&home, nofile_for(80).max(1024));
    let inode = |c: &Killed| {
        std::fs::read_link(format!("/proc/{}/ns/net", c.0.id()))
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let crowd = user_namespaces(80);
    // Wait until every child is inside its new namespace (unshare has run).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut theirs: Vec<String>;
    loop {
        theirs = crowd.iter().map(inode).collect();
        let own = std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string();
        if theirs.iter().all(|n| !n.is_empty() && *n != own) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "unshare did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    scrape_until(&exp, "the 80 namespaces sampled", |_| {
        let held = held_namespaces(exp.pid());
        theirs.iter().all(|n| held.contains(n))
    });
    // The user leaves: at the next discovery every one of them is let go.
    drop(crowd);
    scrape_until(&exp, "the namespaces released", |_| {
        let held = held_namespaces(exp.pid());
        theirs.iter().all(|n| !held.contains(n))
    });
    assert_eq!(exp.get("/-/healthy").unwrap().status, 200);
}

#[test]
fn a_pod_queue_full_for_a_second_and_a_half_stays_in_its_peak() {
    let _s = serial();
    let home = Netns::new("peak-home");
    let pod = Netns::new("peak-pod");
    // Default cadences: the pod's gauges every --netns.sample-interval (1 s).
    let exp = Exporter::start(&home, &["--netns.interval=1s"]);
    let listener = pod.enter(|| listen_with_backlog(7400, 4));
    let labels = pod.label(r#"address="127.0.0.1",port="7400""#);
    scrape_until(&exp, "the pod's listener", |b| {
        metric(b, "netpressure_tcp_listen_queue_length", &labels) == Some(0.0)
    });
    // Full (backlog + 1 = 5 waiting) for 1.5 s, the scenario's own length, then drained.
    let clients = pod.enter(|| connect_many(7400, 5, Duration::from_secs(1)));
    assert_eq!(clients.len(), 5);
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..5 {
        drop(listener.accept().unwrap());
    }
    let body = scrape_until(&exp, "the drained queue sampled", |b| {
        metric(b, "netpressure_tcp_listen_queue_length", &labels) == Some(0.0)
            && metric(b, "netpressure_tcp_listen_queue_length_peak", &labels).is_some_and(|p| p > 0.0)
    });
    assert_eq!(
        metric(&body, "netpressure_tcp_listen_queue_length_peak", &labels),
        Some(5.0)
    );
}

#[test]
fn steady_state_samples_of_other_namespaces_enter_none() {
    let _s = serial();
    let home = Netns::new("steady-home");
    let pods: Vec<Netns> = (0..5).map(|i| Netns::new(&format!("steady{i}"))).collect();
    let _held: Vec<_> = pods.iter().map(|p| p.enter(|| listen_with_backlog(7500, 8))).collect();
    let exp = Exporter::start(&home, &["--netns.interval=1s", "--netns.scan-interval=1h"]);
    let queues: Vec<String> = pods
        .iter()
        .map(|p| p.label(r#"address="127.0.0.1",port="7500""#))
        .collect();
    let value = |b: &str, name: &str| metric(b, name, "").unwrap_or(0.0);
    let first = scrape_until(&exp, "every namespace sampled", |b| {
        queues
            .iter()
            .all(|q| metric(b, "netpressure_tcp_listen_queue_length", q).is_some())
    });
    let (entered, rounds) = (
        value(&first, "netpressure_netns_entered_total"),
        value(&first, "netpressure_netns_samples_total"),
    );
    assert!(
        entered >= 5.0,
        "each namespace was entered to open its handles: {entered}"
    );
    // Three more samples of each namespace (1 s apart), reading through handles opened
    // inside them, without entering any. (A sysctl read at its hourly phase could fall
    // in the window: at most one.)
    let sampled = value(&first, "netpressure_netns_sampled");
    let last = scrape_until(&exp, "three more rounds", |b| {
        value(b, "netpressure_netns_samples_total") >= rounds + 3.0 * sampled
    });
    let more = value(&last, "netpressure_netns_entered_total") - entered;
    assert!(
        more <= 1.0,
        "{more} entries in {} samples",
        value(&last, "netpressure_netns_samples_total") - rounds
    );
}

#[test]
fn a_table_under_pressure_names_the_pod_and_destinations_that_fill_it() {
    let _s = serial();
    // The node: its table tracks what the pods send it. Two pod-like namespaces on
    // veth pairs: the first holds 300 connections to the node, the second 20.
    let node = Netns::with_conntrack("ctnode");
    let (pod_a, pod_b) = (Netns::new("ctpoda"), Netns::new("ctpodb"));
    veth(&pod_a, "10.77.1.2", &node, "10.77.1.1", "1");
    veth(&pod_b, "10.77.2.2", &node, "10.77.2.1", "2");
    let listeners = node.enter(|| {
        let a = std::net::TcpListener::bind(("10.77.1.1", 8080)).unwrap();
        let b = std::net::TcpListener::bind(("10.77.2.1", 8081)).unwrap();
        (a, b)
    });
    // Accepted as they come (std's backlog of 128 would not hold 300), and held.
    let accepted = std::sync::Arc::new(Mutex::new(Vec::new()));
    for (l, n) in [(&listeners.0, 300), (&listeners.1, 20)] {
        let (l, held) = (l.try_clone().unwrap(), std::sync::Arc::clone(&accepted));
        std::thread::spawn(move || {
            for _ in 0..n {
                let Ok((s, _)) = l.accept() else { break };
                held.lock().unwrap().push(s);
            }
        });
    }
    let held_a = pod_a.enter(|| connect_to("10.77.1.1", 8080, 300));
    let held_b = pod_b.enter(|| connect_to("10.77.2.1", 8081, 20));
    assert_eq!((held_a.len(), held_b.len()), (300, 20));

    // The first one is a pod: a process in a kubepods cgroup, its directory in the
    // pod log directory.
    let logs = std::env::temp_dir().join(format!("np-ct-pod-logs-{}", std::process::id()));
    let (root, rel, uid) = pod_cgroup_layout();
    std::fs::create_dir_all(logs.join(format!("shop_web-a_{uid}"))).unwrap();
    let child = Killed(pod_a.cmd("sleep").arg("120").stdin(Stdio::null()).spawn().unwrap());
    let cg = Cgroup::create(&root, &rel);
    cg.add(child.0.id());

    let logs_flag = format!("--path.pod-logs={}", logs.display());
    let mut args = FAST.to_vec();
    args.extend([
        logs_flag.as_str(),
        "--collector.conntrack.breakdown-threshold=0.5",
        "--collector.conntrack.breakdown-interval=1s",
        "--collector.conntrack.breakdown-top=5",
    ]);
    let exp = Exporter::start(&node, &args);

    // Below the threshold: the slow lane goes on with its rounds (the sysctl source's
    // samples count up), the breakdown source is not even run (its evidence, the fill,
    // says a dump could show nothing), and nothing is dumped.
    let runs =
        |b: &str, source: &str| metric(b, "netpressure_samples_total", &format!(r#"source="{source}""#)).unwrap_or(0.0);
    let first = scrape_until(&exp, "the node's entries", |b| {
        metric(b, "netpressure_conntrack_entries", &node.label("")).unwrap_or(0.0) >= 320.0
    });
    let body = scrape_until(&exp, "two more slow-lane rounds", |b| {
        runs(b, "sysctl") >= runs(&first, "sysctl") + 2.0
    });
    assert_eq!(runs(&body, "conntrack_breakdown"), runs(&first, "conntrack_breakdown"));
    assert_eq!(
        metric(&body, "netpressure_conntrack_breakdowns_total", &node.label("")),
        None
    );
    assert!(!body.contains("netpressure_conntrack_top_source_entries"));

    // 320 and more of 500: over the threshold.
    let _max = common::ConntrackMaxGuard::set(500);
    let pod = format!(
        r#"source_address="10.77.1.2",source_netns="{}",source_namespace="shop",source_pod="web-a""#,
        pod_a.label("").trim_start_matches("netns=\"").trim_end_matches('"')
    );
    let top_a = node.label(&pod);
    let top_b = node.label(&format!(
        r#"source_address="10.77.2.2",source_netns="{}""#,
        pod_b.label("").trim_start_matches("netns=\"").trim_end_matches('"')
    ));
    let body = scrape_until(&exp, "the breakdown naming the pod", |b| {
        metric(b, "netpressure_conntrack_top_source_entries", &top_a).is_some()
            && metric(b, "netpressure_conntrack_top_source_entries", &top_b).is_some()
    });
    let from_a = metric(&body, "netpressure_conntrack_top_source_entries", &top_a).unwrap();
    assert!(
        (300.0..=302.0).contains(&from_a),
        "{from_a} entries from the first pod:\n{body}"
    );
    assert_eq!(
        metric(&body, "netpressure_conntrack_top_source_entries", &top_b),
        Some(20.0)
    );
    // It is the top source: its series comes first among the node's sources.
    let sources: Vec<(String, f64)> = body
        .lines()
        .filter(|l| l.starts_with(&format!("netpressure_conntrack_top_source_entries{{{}", node.label(""))))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    let max = sources.iter().map(|s| s.1).fold(0.0, f64::max);
    assert_eq!(max, from_a, "{sources:?}");
    // Destinations ranked: the node's listener for the first pod, then the second's.
    let dest = |addr: &str, port: u16| {
        metric(
            &body,
            "netpressure_conntrack_top_destination_entries",
            &node.label(&format!(
                r#"destination_address="{addr}",destination_port="{port}",protocol="tcp""#
            )),
        )
    };
    assert_eq!(dest("10.77.1.1", 8080), Some(from_a));
    assert_eq!(dest("10.77.2.1", 8081), Some(20.0));
    // The states add up to the entries the dump saw, complete.
    let dumped = metric(&body, "netpressure_conntrack_breakdown_dumped_entries", &node.label("")).unwrap();
    let by_state: f64 = body
        .lines()
        .filter(|l| l.starts_with(&format!("netpressure_conntrack_breakdown_entries{{{}", node.label(""))))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(by_state, dumped);
    assert!(dumped >= 320.0);
    assert!(
        metric(
            &body,
            "netpressure_conntrack_breakdown_entries",
            &node.label(r#"protocol="tcp",state="established""#)
        )
        .unwrap()
            >= 320.0
    );
    assert_eq!(
        metric(&body, "netpressure_conntrack_breakdown_complete", &node.label("")),
        Some(1.0)
    );
    assert!(metric(&body, "netpressure_conntrack_breakdowns_total", &node.label("")).unwrap() >= 1.0);
    // The pods' own tables are empty and below any threshold: no breakdown there.
    assert_eq!(
        metric(&body, "netpressure_conntrack_breakdowns_total", &pod_a.label("")),
        None
    );

    // The same, once, in a terminal: `conntrack-top`, the table named as the alert
    // names it (its netns label, the inode).
    let node_ino = node
        .label("")
        .trim_start_matches("netns=\"")
        .trim_end_matches('"')
        .to_string();
    let out = common::run(
        std::process::Command::new(common::EXPORTER)
            .args(["conntrack-top", "--netns", &node_ino, "--top", "5"])
            .arg(format!("--path.pod-logs={}", logs.display())),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let row = |first: &[&str]| {
        text.lines()
            .any(|l| l.split_whitespace().take(first.len()).eq(first.iter().copied()))
    };
    assert!(
        text.starts_with(&format!("conntrack table of netns {node_ino}:")),
        "{text}"
    );
    assert!(row(&["300", "10.77.1.2", "pod", "shop/web-a"]), "{text}");
    assert!(row(&["20", "10.77.2.2", "netns"]), "{text}");
    assert!(row(&["300", "tcp", "10.77.1.1:8080"]), "{text}");
    assert!(row(&["20", "tcp", "10.77.2.1:8081"]), "{text}");
    drop(exp);
    drop((held_a, held_b, listeners, accepted, child, cg));
    let _ = std::fs::remove_dir_all(&logs);
}

fn connect_to(addr: &str, port: u16, n: usize) -> Vec<TcpStream> {
    let addr: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect()
}

#[test]
fn a_pod_that_appears_just_before_a_breakdown_is_named_in_it() {
    let _s = serial();
    // Discovery at its default (every 10 s), a breakdown every second: the pod below
    // appears after the exporter's first discovery, and the breakdown that first
    // shows its addresses comes long before the next regular discovery.
    let node = Netns::with_conntrack("ctnewnode");
    let exp = Exporter::start(
        &node,
        &[
            "--collector.conntrack.breakdown-threshold=0",
            "--collector.conntrack.breakdown-interval=1s",
        ],
    );
    scrape_until(&exp, "a first breakdown of the node's table", |b| {
        metric(b, "netpressure_conntrack_breakdowns_total", &node.label("")).unwrap_or(0.0) >= 1.0
    });
    // The pod: a namespace on a veth pair with an IPv4 and an IPv6 address (CNI adds
    // them after the namespace exists), 20 connections to the node over each.
    let pod = Netns::new("ctnewpod");
    common::run(std::process::Command::new("ip").args([
        "link", "add", "npnewa", "netns", &pod.name, "type", "veth", "peer", "name", "npnewb", "netns", &node.name,
    ]));
    pod.sh(
        "ip addr add 10.78.1.2/24 dev npnewa && ip addr add fd00:78::2/64 dev npnewa nodad && ip link set npnewa up",
    );
    node.sh(
        "ip addr add 10.78.1.1/24 dev npnewb && ip addr add fd00:78::1/64 dev npnewb nodad && ip link set npnewb up",
    );
    let listener = node.enter(|| std::net::TcpListener::bind(("::", 8095)).unwrap());
    let accepted = std::sync::Arc::new(Mutex::new(Vec::new()));
    {
        let held = std::sync::Arc::clone(&accepted);
        std::thread::spawn(move || {
            for _ in 0..40 {
                let Ok((s, _)) = listener.accept() else { break };
                held.lock().unwrap().push(s);
            }
        });
    }
    let _v4 = pod.enter(|| connect_to("10.78.1.1", 8095, 20));
    let _v6 = pod.enter(|| connect_to("[fd00:78::1]", 8095, 20));
    let pod_label = pod.label("");
    let pod_ino = pod_label.trim_start_matches("netns=");
    // Every breakdown served that lists a pod address names the pod's namespace.
    let mut unnamed = Vec::new();
    let body = scrape_until(&exp, "both pod addresses in a breakdown", |b| {
        let lines: Vec<&str> = b
            .lines()
            .filter(|l| {
                l.starts_with("netpressure_conntrack_top_source_entries{")
                    && (l.contains(r#"source_address="10.78.1.2""#) || l.contains(r#"source_address="fd00:78::2""#))
            })
            .collect();
        unnamed.extend(
            lines
                .iter()
                .filter(|l| !l.contains(&format!("source_netns={pod_ino}")))
                .map(|l| l.to_string()),
        );
        lines.len() == 2
    });
    assert!(unnamed.is_empty(), "served without their pod: {unnamed:?}");
    for addr in ["10.78.1.2", "fd00:78::2"] {
        let labels = format!(r#"source_address="{addr}",source_netns={pod_ino}"#);
        assert!(
            body.lines().any(|l| l.contains(&labels) && l.ends_with(" 20")),
            "{addr}: {body}"
        );
    }
}

/// Every new namespace's first count wakes the slow lane early (its remotes evidence is
/// decided then). A woken round falls in the window of the round before it, and what ran
/// there on its cadence must not run again: 20 namespaces found at once once made the
/// process scan (a walk of every /proc entry) run eight times in the first half second.
#[test]
fn rounds_woken_by_new_namespaces_do_not_repeat_the_scans() {
    let _s = serial();
    let home = Netns::new("wake-home");
    let crowd: Vec<Netns> = (0..20).map(|i| Netns::new(&format!("wake{i}"))).collect();
    let started = std::time::Instant::now();
    let exp = Exporter::start(&home, &["--scan.interval=1s", "--netns.interval=1s"]);
    let body = scrape_until(&exp, "the 20 namespaces sampled", |b| {
        crowd
            .iter()
            .all(|ns| metric(b, "netpressure_tcp_sockets_in_use", &ns.label("")).is_some())
    });
    // One scan a second at most, and one at the start.
    let most = started.elapsed().as_secs_f64().floor() + 1.0;
    for source in ["processes", "sysctl"] {
        let scans = metric(&body, "netpressure_samples_total", &format!(r#"source="{source}""#)).unwrap();
        assert!(scans <= most, "{source}: {scans} scans in {:?}", started.elapsed());
    }
}
