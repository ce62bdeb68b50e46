//! Heap allocations of the steady state, counted by a global allocator: after warm-up,
//! the fast lane's ticks of the own namespace, and a second of sampling (one slow-lane
//! round and the fast ticks) with 20 other namespaces, allocate nothing. Named
//! exceptions, outside the counted windows: a discovery (every --netns.interval: it
//! lists /proc), a scan round (every --scan.interval: the process scan lists /proc, the
//! sock_diag dumps fill their maps), a conntrack breakdown, and a namespace's first
//! samples (its buffers grow to their size once). The drop map is read once a second
//! with no allocation either (its own test: a fast tick reads it only when a second has
//! passed). Run with NP_ALLOC_TRACE=1 to see where
//! an allocation comes from.
#![allow(clippy::unwrap_used, clippy::expect_used, unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// NP_ALLOC_TRACE set: print where each counted allocation comes from.
static TRACE: AtomicBool = AtomicBool::new(false);

// SAFETY: every call goes to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            if TRACE.load(Ordering::Relaxed) {
                COUNTING.store(false, Ordering::Relaxed);
                eprintln!(
                    "alloc {} bytes:\n{}",
                    layout.size(),
                    std::backtrace::Backtrace::force_capture()
                );
                COUNTING.store(true, Ordering::Relaxed);
            }
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The counter is process-wide: the tests take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn allocations_in(f: impl FnOnce()) -> u64 {
    TRACE.store(std::env::var_os("NP_ALLOC_TRACE").is_some(), Ordering::Relaxed);
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    f();
    COUNTING.store(false, Ordering::Relaxed);
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[test]
fn a_steady_state_fast_tick_of_the_own_namespace() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let cfg = netpressure_exporter::config::Config::from_args(["t", "--no-collector.netns"]).unwrap();
    let (mut s, _rx) = netpressure_exporter::sampler::Sampler::from_config(&cfg);
    for _ in 0..8 {
        s.step_all();
    }
    let n = allocations_in(|| {
        for _ in 0..8 {
            s.tick();
        }
    });
    eprintln!("{n} allocations in 8 fast ticks");
    assert_eq!(
        n, 0,
        "a steady-state fast tick allocated (NP_ALLOC_TRACE=1 shows where)"
    );
}

/// Namespaces made for the test, deleted on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = std::process::Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

#[test]
fn a_steady_state_second_with_20_other_namespaces() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let names: Vec<String> = (0..20)
        .map(|i| format!("np-alloc-{}-{i}", std::process::id()))
        .collect();
    let ns = Namespaces(names.clone());
    for n in &ns.0 {
        assert!(std::process::Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .unwrap()
            .success());
    }
    // Discovery every minute: the counted steps fall between two discoveries.
    let cfg = netpressure_exporter::config::Config::from_args(["t", "--netns.interval=1m"]).unwrap();
    let (mut s, _rx) = netpressure_exporter::sampler::Sampler::from_config(&cfg);
    for _ in 0..12 {
        s.step_all();
    }
    // A second: the slow lane's round and the fast lane's four ticks. Five of them:
    // each namespace's scans come at their own phase (every --netns.scan-interval),
    // and a second that holds one is a named exception; the others allocate nothing.
    let seconds: Vec<u64> = (0..5)
        .map(|_| {
            allocations_in(|| {
                s.step_all();
                for _ in 0..3 {
                    s.tick();
                }
            })
        })
        .collect();
    let n = seconds.iter().copied().min().unwrap();
    eprintln!(
        "allocations in five seconds with {} other namespaces: {seconds:?}",
        names.len()
    );
    assert_eq!(n, 0, "a steady-state second allocated (NP_ALLOC_TRACE=1 shows where)");
}

/// The drop counter's map, read once a second for every namespace, is read into
/// buffers it keeps: after the first read, reads allocate nothing (with drops being
/// counted meanwhile: the test's own datagrams to a closed port).
#[test]
fn a_read_of_the_drop_map() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut counter = netpressure_exporter::bpf::DropCounter::load(&std::fs::read("/sys/kernel/btf/vmlinux").unwrap())
        .expect("the drop counter loads (root, BTF, 5.17+)");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let closed: std::net::SocketAddr = ([127, 0, 0, 1], 9).into();
    let mut out = Vec::with_capacity(netpressure_exporter::bpf::MAX_ENTRIES as usize);
    let _ = udp.send_to(b"x", closed);
    counter.read(&mut out).unwrap();
    assert!(!out.is_empty(), "no drop counted");
    let n = allocations_in(|| {
        for _ in 0..5 {
            let _ = udp.send_to(b"x", closed);
            counter.read(&mut out).unwrap();
        }
    });
    assert_eq!(n, 0, "reading the drop map allocated (NP_ALLOC_TRACE=1 shows where)");
}
