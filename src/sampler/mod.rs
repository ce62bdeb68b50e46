//! The clock. Two lanes, each on its own thread, so that slow work never delays a
//! sample:
//!
//! - the **fast lane** (this module's [`Sampler`], the `sampler` thread) takes the
//!   pressure gauges every `--sample.interval` in the exporter's own namespace and every
//!   `--netns.sample-interval` in every other namespace it tracks (without entering
//!   them: their handles stay open), keeps the sliding-window peaks, merges the slow
//!   lane's latest output and publishes one immutable snapshot per tick;
//! - the **slow lane** ([`SlowLane`], the `scanner` thread) discovers namespaces, reads
//!   their sysctls, and runs the work that walks the kernel's hash tables or every
//!   process: SYN_RECV and remote-port dumps, the process scan, every `--scan.interval`
//!   (other namespaces: `--netns.scan-interval`, spread by inode).
//!
//! The slow lane publishes which namespaces are tracked ([`registry::Registry`]); the
//! fast lane follows it.
//! A scrape only encodes the latest snapshot; it never touches the kernel.
//!
//! Files: `fast.rs` and `slow.rs` (the two lanes), `wiring.rs` (which slots a lane
//! runs in a namespace), `slot.rs` (one source in one namespace), `lane.rs` (the
//! namespaces of one lane and how another namespace is sampled), `home.rs` (entering a
//! namespace and coming back), `discovery.rs` (which namespaces, with which labels),
//! `panics.rs` (caught panics and the faults tests inject), `stop.rs` (stopping).

pub mod discovery;
pub mod home;
pub mod lane;
pub mod registry;
pub mod slot;

mod fast;
mod panics;
mod slow;
mod stop;
mod wiring;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cadence::SLOW_TICK;
use crate::config::Config;
use crate::snapshot::Snapshot;

pub use fast::Sampler;
pub(crate) use panics::fault;
pub use panics::Panics;
pub use slow::SlowLane;
pub use stop::{stop_pair, StopReceiver, StopSender};

/// How far past its next due round the slow lane may be before `/-/healthy` fails:
/// three ticks beyond the longest a round may take on purpose (a conntrack breakdown's
/// dump, cut at `--collector.conntrack.breakdown-timeout`). The slow lane publishes when
/// its next round is due, so a lane that sleeps because nothing is due is not late.
pub fn slow_round_deadline(cfg: &Config) -> Duration {
    3 * SLOW_TICK + cfg.breakdown_timeout
}

/// What scrapes read: `None` until the first sample.
pub type Published = watch::Receiver<Option<Arc<Snapshot>>>;

#[cfg(test)]
mod tests {
    //! The lanes' namespace switching against the real kernel, with failures injected
    //! through [`Home::switch`]. Needs root (the suite runs as root).
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::netns;
    use std::fs::File;
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;

    /// A namespace pinned by `ip netns add`, deleted on drop.
    struct TestNs(String);

    impl TestNs {
        fn new(tag: &str) -> Self {
            let name = format!("np-unit-{tag}-{}", std::process::id());
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            assert!(Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success());
            Self(name)
        }

        fn ino(&self) -> u64 {
            std::fs::metadata(format!("/run/netns/{}", self.0)).unwrap().ino()
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    const REAL: u64 = 0;
    const FAIL_RETURN: u64 = 1;
    // Any other value: EPERM when entering the namespace with that inode.

    fn switch(mode: &Arc<AtomicU64>) -> home::Switch {
        let own_ino = netns::key_of(std::path::Path::new("/proc/thread-self/ns/net"))
            .unwrap()
            .1;
        let mode = Arc::clone(mode);
        Box::new(move |f: &File| {
            let ino = f.metadata()?.ino();
            match mode.load(Ordering::SeqCst) {
                FAIL_RETURN if ino == own_ino => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
                m if m == ino => Err(std::io::Error::from_raw_os_error(libc::EPERM)),
                _ => crate::sys::setns_net(f),
            }
        })
    }

    /// A sampler of sockstat (fast lane) and sysctl (slow lane, whose settings are read
    /// inside each namespace), discovering and sampling every namespace on every step.
    fn sampler(mode: &Arc<AtomicU64>) -> (Sampler, Published) {
        let cfg = Config {
            sources: vec!["sockstat", "sysctl"],
            netns_interval: Duration::from_secs(1),
            netns_sample_interval: Config::default().sample_interval,
            ..Config::default()
        };
        let (mut s, rx) = Sampler::from_config(&cfg);
        s.fast.home.as_mut().expect("the fast lane's home").switch = switch(mode);
        let slow = s.slow.as_mut().expect("the slow lane");
        slow.lane.home.as_mut().expect("the slow lane's home").switch = switch(mode);
        (s, rx)
    }

    /// Whether the published snapshot has an in-use series labelled with `netns`.
    fn serves(rx: &Published, netns: &str) -> bool {
        let snap = rx.borrow().clone().unwrap();
        let prefix = format!("netns=\"{netns}\"");
        let found = snap
            .iter()
            .any(|(d, l, _)| d.name == "netpressure_tcp_sockets_in_use" && l.starts_with(&prefix));
        found
    }

    fn own_label() -> String {
        let key = netns::key_of(std::path::Path::new("/proc/thread-self/ns/net")).unwrap();
        let init = netns::init_key(std::path::Path::new("/proc"));
        discovery::netns_label(key, init)
            .trim_start_matches("netns=\"")
            .trim_end_matches('"')
            .to_string()
    }

    #[test]
    fn a_failed_return_home_serves_nothing_under_the_own_label_until_it_succeeds() {
        let (a, b) = (TestNs::new("home-a"), TestNs::new("home-b"));
        let own = own_label();
        let own_key = netns::key_of(std::path::Path::new("/proc/thread-self/ns/net")).unwrap();
        let mode = Arc::new(AtomicU64::new(REAL));
        let (mut s, rx) = sampler(&mode);
        s.step_all();
        assert!(serves(&rx, &own) && serves(&rx, &a.ino().to_string()) && serves(&rx, &b.ino().to_string()));

        // Steady state needs no entering. A new namespace does (its handles are opened
        // inside it), and the return from it fails: the thread stays there.
        mode.store(FAIL_RETURN, Ordering::SeqCst);
        let c = TestNs::new("home-c");
        // This step finds the namespace, and both lanes fail to come back from it (what
        // they sampled before that was sampled at home).
        s.step_all();
        for _ in 0..3 {
            s.step_all();
            assert!(!serves(&rx, &own), "a series under the own label while displaced");
            let snap = rx.borrow().clone().unwrap();
            assert_eq!(snap.value("netpressure_source_up", r#"source="sockstat""#), Some(0.0));
        }
        // The thread really is elsewhere: nothing above was read from the wrong namespace.
        assert_ne!(
            netns::key_of(std::path::Path::new("/proc/thread-self/ns/net"))
                .unwrap()
                .1,
            own_key.1
        );

        mode.store(REAL, Ordering::SeqCst);
        s.step_all();
        s.step_all();
        for ns in [&a, &b, &c] {
            assert!(serves(&rx, &ns.ino().to_string()));
        }
        assert!(serves(&rx, &own));
        assert_eq!(own_label(), own);
    }

    #[test]
    fn eperm_on_one_namespace_leaves_the_others_sampled() {
        let (a, b) = (TestNs::new("eperm-a"), TestNs::new("eperm-b"));
        let own = own_label();
        let mode = Arc::new(AtomicU64::new(a.ino()));
        let (mut s, rx) = sampler(&mode);
        for _ in 0..3 {
            s.step_all();
            assert!(serves(&rx, &own) && serves(&rx, &b.ino().to_string()));
            assert!(!serves(&rx, &a.ino().to_string()));
        }
        assert!(s.entries.failed.load(Ordering::SeqCst) >= 3);
        // Allowed again: found and sampled at the next discovery.
        mode.store(REAL, Ordering::SeqCst);
        s.step_all();
        s.step_all();
        assert!(serves(&rx, &a.ino().to_string()) && serves(&rx, &b.ino().to_string()));
    }

    #[test]
    fn a_panic_in_either_lane_is_counted_the_thread_goes_home_and_sampling_goes_on() {
        let a = TestNs::new("panic-a");
        let own_key = netns::key_of(std::path::Path::new("/proc/thread-self/ns/net")).unwrap();
        let mode = Arc::new(AtomicU64::new(REAL));
        let (mut s, rx) = sampler(&mode);
        // step_all runs both lanes on this thread, where the fault is set: the first
        // step finds the namespace and each lane's visit to it panics.
        fault::AT.with(|f| f.set(Some("visit")));
        s.step_all();
        assert_eq!(
            netns::key_of(std::path::Path::new("/proc/thread-self/ns/net"))
                .unwrap()
                .1,
            own_key.1,
            "the panic left the thread in another namespace"
        );
        fault::AT.with(|f| f.set(Some("discovery")));
        s.step_all();
        fault::AT.with(|f| f.set(None));
        s.step_all();
        s.step_all();
        let snap = rx.borrow().clone().unwrap();
        // Each fault panicked once, and this sampler's counts are its own (another
        // test's sampler in this process counts apart).
        for what in ["slow_lane", "fast_lane", "discovery"] {
            let n = snap.value("netpressure_source_panics_total", &format!("source=\"{what}\""));
            assert_eq!(n, Some(1.0), "{what}");
        }
        // Both lanes went on: the namespace is sampled, the slow lane's rounds are fresh.
        assert!(serves(&rx, &a.ino().to_string()) && serves(&rx, &own_label()));
        assert!(snap.slow_round.unwrap().elapsed() < Duration::from_secs(2));
    }
}
