//! File-descriptor pressure against the real kernel: the system table and the processes
//! nearest their RLIMIT_NOFILE.

#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

mod common;

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{metric, scrape_until, Exporter, Netns, EXPORTER};

/// file-nr is the node's: the test that counts its rise runs alone (write), while the
/// others, which open and close files and processes, may run together (read). The
/// CI run of 2026-12-07 21:51 saw it miss its 2,000 files beside them.
static NODE_FILES: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn others() -> std::sync::RwLockReadGuard<'static, ()> {
    NODE_FILES.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `sleep 60` with RLIMIT_NOFILE `soft`/`hard` and exactly `open` descriptors: 0-2 on
/// /dev/null, and 3.. duplicated from stdin before exec.
fn child_with_fds(open: i32, soft: u64, hard: u64) -> Child {
    let mut cmd = Command::new("sleep");
    cmd.arg("60")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setrlimit and dup2 are async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 3..open {
                if libc::dup2(0, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

#[test]
fn the_process_nearest_its_limit_is_first_and_leaves_when_it_exits() {
    let _files = others();
    let ns = Netns::new("fdtop");
    // 290 of 300: fuller than anything else on the machine, other tests' children included.
    let mut child = child_with_fds(290, 300, 300);
    let labels = format!(r#"pid="{}",comm="sleep""#, child.id());
    let exp = Exporter::start(&ns, &["--scan.interval=1s"]);
    let body = scrape_until(&exp, "the child in the top-K", |b| {
        metric(b, "netpressure_process_open_fds", &labels) == Some(290.0)
    });
    assert_eq!(metric(&body, "netpressure_process_fd_limit", &labels), Some(300.0));
    // The fullest of the served processes (series are listed by label, not by rank).
    let fill = |l: &str| {
        let labels = l.split_once('{').unwrap().1.rsplit_once("} ").unwrap().0;
        metric(&body, "netpressure_process_open_fds", labels).unwrap()
            / metric(&body, "netpressure_process_fd_limit", labels).unwrap()
    };
    let fullest = body
        .lines()
        .filter(|l| l.starts_with("netpressure_process_open_fds{"))
        .max_by(|a, b| fill(a).total_cmp(&fill(b)))
        .unwrap();
    assert!(fullest.contains(&labels), "the child is the fullest: {fullest}");
    assert!(metric(&body, "netpressure_processes_scanned", "").unwrap() > 1.0);

    child.kill().unwrap();
    child.wait().unwrap();
    scrape_until(&exp, "the child's series to go", |b| !b.contains(&labels));
}

#[test]
fn allocated_file_handles_rise_with_open_files() {
    let _files = NODE_FILES.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    const FILES: usize = 2000;
    let ns = Netns::new("fdsys");
    let exp = Exporter::start(&ns, &[]);
    let before = metric(&exp.scrape(), "netpressure_fd_allocated", "").unwrap();
    let files: Vec<File> = (0..FILES).map(|_| File::open("/dev/null").unwrap()).collect();
    let body = scrape_until(&exp, "file-nr to rise", |b| {
        metric(b, "netpressure_fd_allocated", "").unwrap() >= before + FILES as f64
    });
    assert!(metric(&body, "netpressure_fd_allocated_peak", "").unwrap() >= before + FILES as f64);
    assert!(metric(&body, "netpressure_fd_limit", "").unwrap() > 0.0);
    assert!(metric(&body, "netpressure_fd_process_ceiling", "").unwrap() >= 1024.0);
    drop(files);
}

#[test]
fn scans_racing_with_exiting_processes_never_fail() {
    let _files = others();
    let ns = Netns::new("fdrace");
    let exp = Exporter::start(&ns, &["--scan.interval=1s"]);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut spawned = 0;
    while Instant::now() < deadline {
        let mut batch: Vec<Child> = (0..20).map(|_| Command::new("true").spawn().unwrap()).collect();
        let mut long: Child = Command::new("sleep").arg("5").spawn().unwrap();
        for c in &mut batch {
            c.wait().unwrap();
        }
        long.kill().unwrap();
        long.wait().unwrap();
        spawned += 21;
    }
    assert!(spawned > 200);
    let body = exp.scrape();
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="processes""#),
        Some(1.0)
    );
    assert_eq!(
        metric(&body, "netpressure_source_errors_total", r#"source="processes""#),
        Some(0.0)
    );
    assert!(metric(&body, "netpressure_samples_total", r#"source="processes""#).unwrap() >= 3.0);
}

#[test]
fn unprivileged_serves_what_it_can_read_and_counts_the_rest() {
    let _files = others();
    // A procfs mounted with hidepid=1 in a private mount namespace: an unprivileged user
    // sees every PID but may read only its own processes.
    let ns = Netns::new("fdnobody");
    let dir = std::env::temp_dir().join(format!("np-fd-nobody-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("proc")).unwrap();
    // Copy the binary somewhere nobody may execute it from, whatever the checkout's modes.
    let exe = dir.join("netpressure_exporter");
    std::fs::copy(EXPORTER, &exe).unwrap();
    common::run(Command::new("chmod").args(["-R", "a+rX"]).arg(&dir));
    let script = format!(
        "mount -t proc -o hidepid=1 proc {proc} && exec setpriv --reuid=65534 --regid=65534 --clear-groups \
         {exe} --web.listen-address=127.0.0.1:{port} --scan.interval=1s --path.procfs={proc}",
        proc = dir.join("proc").display(),
        exe = exe.display(),
        port = common::PORT,
    );
    let exp = Exporter::start_cmd(
        ns.cmd("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script]),
    );
    let body = scrape_until(&exp, "a process scan", |b| {
        metric(b, "netpressure_processes_scanned", "").is_some()
    });
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="processes""#),
        Some(1.0)
    );
    // Its own process is readable; root's (this test, init, ...) are not.
    assert!(metric(&body, "netpressure_processes_scanned", "").unwrap() >= 1.0);
    assert!(metric(&body, "netpressure_processes_unreadable", "").unwrap() >= 1.0);
    assert!(body.contains(r#"comm="netpressure_exp""#), "{body}");
    drop(exp);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_raised_limit_is_seen_at_the_next_scan_when_the_process_is_near_it() {
    let _files = others();
    let ns = Netns::new("fdprlimit");
    // The hard limit leaves room to raise the soft one without CAP_SYS_RESOURCE.
    let mut child = child_with_fds(280, 300, 8000);
    let labels = format!(r#"pid="{}",comm="sleep""#, child.id());
    let exp = Exporter::start(&ns, &["--scan.interval=1s"]);
    scrape_until(&exp, "the old limit", |b| {
        metric(b, "netpressure_process_fd_limit", &labels) == Some(300.0)
    });
    common::run(Command::new("prlimit").args(["--pid", &child.id().to_string(), "--nofile=4000:4000"]));
    scrape_until(&exp, "the raised limit", |b| {
        metric(b, "netpressure_process_fd_limit", &labels) == Some(4000.0)
    });
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_lowered_limit_is_seen_at_the_next_scan_whatever_the_fill() {
    let _files = others();
    let ns = Netns::new("fdlower");
    // Far from its limit when first scanned (285 of 20,000), then the process lowers its
    // soft limit as a runtime might right after start: 285 of 300.
    let mut child = child_with_fds(285, 20_000, 20_000);
    let labels = format!(r#"pid="{}",comm="sleep""#, child.id());
    let exp = Exporter::start(&ns, &["--scan.interval=1s"]);
    let scans = |b: &str| metric(b, "netpressure_samples_total", r#"source="processes""#).unwrap_or(0.0);
    let before = scans(&scrape_until(&exp, "two scans", |b| scans(b) >= 2.0));
    common::run(Command::new("prlimit").args(["--pid", &child.id().to_string(), "--nofile=300:20000"]));
    // The scan running while prlimit ran may have read either limit; the one after must
    // read the new one.
    let body = scrape_until(&exp, "two more scans", |b| scans(b) >= before + 2.0);
    assert_eq!(
        metric(&body, "netpressure_process_fd_limit", &labels),
        Some(300.0),
        "{body}"
    );
    assert_eq!(metric(&body, "netpressure_process_open_fds", &labels), Some(285.0));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_fifo_or_an_endless_file_under_the_root_neither_stalls_nor_bloats() {
    let _files = others();
    use std::os::unix::fs::symlink;
    // A procfs root whose file-nr is a FIFO (an open or read would block for ever);
    // everything else is the real /proc. (/dev/zero and oversized files: the procfs
    // module's unit tests.)
    let root = std::env::temp_dir().join(format!("np-hostile-proc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("sys/fs")).unwrap();
    for entry in ["stat", "self", "thread-self"] {
        symlink(format!("/proc/{entry}"), root.join(entry)).unwrap();
    }
    for entry in ["net", "kernel"] {
        symlink(format!("/proc/sys/{entry}"), root.join("sys").join(entry)).unwrap();
    }
    common::run(Command::new("mkfifo").arg(root.join("sys/fs/file-nr")));
    symlink("/proc/sys/fs/nr_open", root.join("sys/fs/nr_open")).unwrap();

    let ns = Netns::new("hostile");
    let arg = format!("--path.procfs={}", root.display());
    // Ready means the first sample was published: nothing blocked it.
    let exp = Exporter::start(&ns, &[&arg, "--no-collector.netns"]);
    let body = scrape_until(&exp, "a few samples", |b| {
        metric(b, "netpressure_samples_total", r#"source="filefd""#).unwrap_or(0.0) >= 3.0
    });
    assert_eq!(metric(&body, "netpressure_source_up", r#"source="filefd""#), Some(0.0));
    assert!(metric(&body, "netpressure_source_errors_total", r#"source="filefd""#).unwrap() >= 3.0);
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="sockstat""#),
        Some(1.0)
    );
    let rss = metric(&body, "process_resident_memory_bytes", "").unwrap();
    assert!(rss < 64.0 * 1024.0 * 1024.0, "RSS {rss}");
    assert_eq!(exp.get("/-/healthy").unwrap().status, 200);
    let (code, log) = exp.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("not a regular file"), "{log}");
    let _ = std::fs::remove_dir_all(&root);
}

/// Per pod, the fullest process against its own limit: two processes of one pod (a
/// kubepods cgroup, the kubelet's log directory naming it), about 40 and 10 descriptors
/// of 100 each: the pod's one series (no PID) is the fuller's; when it exits, the
/// other's; with none, no series.
#[test]
fn a_pods_fullest_process_is_its_one_series() {
    let _files = others();
    use common::{pod_cgroup_layout, Cgroup, Killed};
    let ns = Netns::new("fdpod");
    let logs = std::env::temp_dir().join(format!("np-fd-pod-logs-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let (root, rel, uid) = pod_cgroup_layout();
    std::fs::create_dir_all(logs.join(format!("shop_api-0_{uid}"))).unwrap();
    let fuller = Killed(child_with_fds(40, 100, 100));
    let other = Killed(child_with_fds(10, 100, 100));
    let cg = Cgroup::create(&root, &rel);
    // In the pod's cgroup before the exporter's first scan: a container's processes
    // start in theirs.
    cg.add(fuller.0.id());
    cg.add(other.0.id());
    let logs_flag = format!("--path.pod-logs={}", logs.display());
    let exp = Exporter::start(&ns, &["--scan.interval=1s", &logs_flag]);
    let series = r#"namespace="shop",pod="api-0""#;
    // The kernel's own count of each child's descriptors (the test process's spawning
    // may leave one more than asked for), against the limit of 100.
    let ratio = |c: &Killed| std::fs::read_dir(format!("/proc/{}/fd", c.0.id())).unwrap().count() as f64 / 100.0;
    let (want_fuller, want_other) = (ratio(&fuller), ratio(&other));
    assert!(want_fuller >= 0.4 && want_other < 0.2, "{want_fuller} {want_other}");
    let body = scrape_until(&exp, "the pod's ratio", |b| {
        metric(b, "netpressure_pod_fd_usage_ratio", series) == Some(want_fuller)
    });
    assert_eq!(body.matches("netpressure_pod_fd_usage_ratio{").count(), 1, "{body}");
    drop(fuller);
    scrape_until(&exp, "the other process's ratio", |b| {
        metric(b, "netpressure_pod_fd_usage_ratio", series) == Some(want_other)
    });
    drop(other);
    scrape_until(&exp, "no series once the pod has no process", |b| {
        !b.contains("netpressure_pod_fd_usage_ratio{")
    });
    drop(cg);
    let _ = std::fs::remove_dir_all(&logs);
}

/// A process moved from one pod's cgroup to another's is counted in the new pod within
/// the re-read cadence of its cgroup (it kept its first pod for good).
#[test]
fn a_process_moved_to_another_pods_cgroup_is_counted_there() {
    let _files = others();
    use common::{pod_cgroup_layout, Cgroup, Killed};
    let ns = Netns::new("fdmove");
    let logs = std::env::temp_dir().join(format!("np-fd-move-logs-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let (root, rel, uid) = pod_cgroup_layout();
    let uid2 = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
    let rel2 = rel
        .replace(&uid.replace('-', "_"), &uid2.replace('-', "_"))
        .replace(uid, uid2);
    std::fs::create_dir_all(logs.join(format!("shop_api-0_{uid}"))).unwrap();
    std::fs::create_dir_all(logs.join(format!("shop_api-1_{uid2}"))).unwrap();
    let proc = Killed(child_with_fds(40, 100, 100));
    let (first, second) = (Cgroup::create(&root, &rel), Cgroup::create(&root, &rel2));
    first.add(proc.0.id());
    let logs_flag = format!("--path.pod-logs={}", logs.display());
    let exp = Exporter::start(&ns, &["--scan.interval=1s", &logs_flag]);
    let (api0, api1) = (r#"namespace="shop",pod="api-0""#, r#"namespace="shop",pod="api-1""#);
    scrape_until(&exp, "the first pod's ratio", |b| {
        metric(b, "netpressure_pod_fd_usage_ratio", api0).is_some()
    });
    second.add(proc.0.id());
    // Re-read once in 6 scans of 1 s.
    scrape_until(&exp, "the process counted in its new pod only", |b| {
        metric(b, "netpressure_pod_fd_usage_ratio", api1).is_some()
            && metric(b, "netpressure_pod_fd_usage_ratio", api0).is_none()
    });
    drop(proc);
    drop((first, second));
    let _ = std::fs::remove_dir_all(&logs);
}
