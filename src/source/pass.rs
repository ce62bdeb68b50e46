//! The node pass, as the sources of other namespaces use it: one BPF program run
//! ([`crate::bpf::pass`]) reads every namespace's conntrack count and every listener's
//! queues, SYN queue included, once per `--netns.sample-interval`, where the
//! per-namespace path sends each namespace a ctnetlink GET_STATS and a sock_diag LISTEN
//! dump (30–57 µs a namespace at 250, against about 1 µs: KERNEL.md §11).
//!
//! **Trust, then use.** The pass reads kernel internals through offsets the loader
//! relocates and some it finds itself (conntrack's per-namespace data). So before a
//! field is used, and every [`RECHECK`] after, the pass is compared with the kernel's
//! own interfaces in the exporter's namespace: the conntrack count with
//! `nf_conntrack_count` read just before and after the pass, the listeners (address,
//! port, backlog) with a sock_diag LISTEN dump. A field that disagrees, like a program
//! that does not load (a kernel before 5.17, no BTF, no CAP_BPF and CAP_PERFMON,
//! lockdown), leaves the sources on the per-namespace path for that field; which path
//! each field takes is served in `netpressure_node_pass_used{field}` and said in one
//! log line when it changes.
//!
//! A namespace's records are found by inode. The inode cannot have passed to another
//! namespace while the sources use it: the sampler holds a descriptor of every tracked
//! namespace, which keeps it (and so its inode) alive.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bpf::pass::{ListenerRecord, NsRecord, PassOutput, PassProgram};
use crate::metrics;
use crate::netlink::sock_diag::{state, Filter, LazySockDiag, TcpDump, TcpSock};
use crate::procfs::ProcFile;
use crate::snapshot::Snapshot;

/// How often a used field is compared with the kernel's own interfaces again.
pub const RECHECK: Duration = Duration::from_secs(300);

/// Comparisons tried before a field is said to disagree: a count can move between the
/// reads that bracket the pass.
const TRIES: usize = 3;

/// What the pass serves in place of a per-namespace read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `netpressure_conntrack_entries` (ctnetlink GET_STATS otherwise).
    Conntrack,
    /// The listeners' queues and SYN queues (sock_diag LISTEN and SYN_RECV dumps).
    Listeners,
    /// `netpressure_tcp_time_wait_sockets` (sockstat; the namespace's other sockstat
    /// counts are then read at the counter cadence).
    TimeWait,
}

impl Field {
    const ALL: [Self; 3] = [Self::Conntrack, Self::Listeners, Self::TimeWait];

    fn name(self) -> &'static str {
        match self {
            Self::Conntrack => "conntrack",
            Self::Listeners => "listeners",
            Self::TimeWait => "time_wait",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The pass for the node: shared by every namespace's sources of one sampler (through
/// [`Node::pass`](crate::source::Node::pass)); run by the fast lane before the other
/// namespaces' sources ([`NodePass::refresh`]).
#[derive(Default)]
pub struct NodePass(Mutex<State>);

#[derive(Default)]
struct State {
    /// The kernel's BTF, until the program is loaded from it.
    btf: Option<std::path::PathBuf>,
    program: Option<Box<PassProgram>>,
    out: PassOutput,
    /// The last pass ran fine in the current round of other namespaces.
    fresh: bool,
    /// Per field: in use, or why not; `None` until first compared.
    used: [Option<Result<(), String>>; 3],
    checked: Option<Instant>,
    /// Per field: comparisons in a row that disagreed.
    misses: [usize; 3],
    own_ino: u32,
    ct_count: Option<ProcFile>,
    ct_max: Option<ProcFile>,
    /// The own namespace's sockstat, for the TIME_WAIT comparison.
    sockstat: Option<ProcFile>,
    /// `nf_conntrack_max` as read at the last pass (global: the same in every namespace).
    max: Option<u64>,
    diag: LazySockDiag,
    listen_dump: Option<TcpDump>,
    runs: u64,
    seconds: f64,
    errors: u64,
}

impl NodePass {
    /// The pass for the exporter whose namespace has inode `own_ino`. The program is
    /// loaded by the first [`NodePass::loaded`] or [`NodePass::refresh`]: when the first
    /// other namespace is followed, on the sampler's thread (a node without pods never
    /// loads it: 0.7 MiB of RSS).
    pub fn new(cfg: &crate::config::Config, own_ino: u64) -> Self {
        Self(Mutex::new(State {
            own_ino: u32::try_from(own_ino).unwrap_or(0),
            btf: Some(cfg.roots.sysfs.join("kernel/btf/vmlinux")),
            ct_count: Some(ProcFile::whole(cfg.roots.proc("sys/net/netfilter/nf_conntrack_count"))),
            ct_max: Some(ProcFile::whole(cfg.roots.proc("sys/net/netfilter/nf_conntrack_max"))),
            sockstat: Some(ProcFile::whole(cfg.roots.proc_net("sockstat"))),
            listen_dump: Some(TcpDump::new(
                "sock_diag LISTEN",
                state::bit(state::LISTEN),
                Filter::None,
            )),
            ..State::default()
        }))
    }

    /// Whether the program is loaded (the other namespaces then run in one tick),
    /// loading it the first time; `false` leaves every field on the per-namespace path
    /// (the reason logged once).
    pub fn loaded(&self) -> bool {
        let mut s = crate::sync::lock(&self.0);
        s.load_once();
        s.program.is_some()
    }

    /// Runs a pass for the round of other namespaces about to be sampled, and compares
    /// it with the kernel's own interfaces when that is due. The calling thread is in
    /// the exporter's own namespace.
    pub fn refresh(&self, now: Instant) {
        let mut s = crate::sync::lock(&self.0);
        let s = &mut *s;
        s.fresh = false;
        s.load_once();
        if s.program.is_none() {
            return;
        }
        let check =
            s.misses.iter().any(|m| *m > 0) || s.checked.is_none_or(|t| now.saturating_duration_since(t) >= RECHECK);
        let before = if check { s.own_counts() } else { (None, None) };
        let started = Instant::now();
        let Some(program) = s.program.as_mut() else { return };
        let ran = program.run(&mut s.out);
        s.seconds += started.elapsed().as_secs_f64();
        s.runs += 1;
        if let Err(e) = ran {
            s.errors += 1;
            log::debug!("node pass: {e}");
            return;
        }
        s.max = s.ct_max.as_mut().and_then(|f| f.read_u64_opt().ok().flatten());
        if check {
            let after = s.own_counts();
            s.compare(before, after);
            s.checked = Some(now);
        }
        s.out.namespaces.sort_unstable_by_key(|r| r.ino);
        s.out.listeners.sort_unstable_by_key(|r| r.ino);
        s.fresh = true;
    }

    /// Namespace `ino`'s record from this round's pass, if the field is in use.
    pub fn namespace(&self, ino: u64, field: Field) -> Option<(NsRecord, Option<u64>)> {
        let s = crate::sync::lock(&self.0);
        if !s.fresh || !s.in_use(field) {
            return None;
        }
        let ino = u32::try_from(ino).ok()?;
        let i = s.out.namespaces.binary_search_by_key(&ino, |r| r.ino).ok()?;
        Some((s.out.namespaces[i], s.max))
    }

    /// Calls `f` with namespace `ino`'s listeners from this round's pass; `false` (and
    /// no call) when the pass does not serve listeners now.
    pub fn listeners(&self, ino: u64, mut f: impl FnMut(&ListenerRecord)) -> bool {
        let s = crate::sync::lock(&self.0);
        // A listener left out, or a chain not followed to its end: any namespace's list
        // may be short.
        if !s.fresh || !s.in_use(Field::Listeners) || s.out.meta.listeners_lost > 0 || !s.hash_walked_whole() {
            return false;
        }
        let Ok(ino) = u32::try_from(ino) else { return false };
        let all = &s.out.listeners;
        let start = all.partition_point(|r| r.ino < ino);
        for r in all[start..].iter().take_while(|r| r.ino == ino) {
            f(r);
        }
        true
    }

    /// The pass's self-metrics.
    pub fn emit(&self, out: &mut Snapshot) {
        let s = crate::sync::lock(&self.0);
        out.push(&metrics::NODE_PASS_UP, &[], f64::from(u8::from(s.program.is_some())));
        if s.program.is_none() {
            return;
        }
        for f in Field::ALL {
            out.push(
                &metrics::NODE_PASS_USED,
                &[("field", f.name())],
                f64::from(u8::from(s.in_use(f))),
            );
        }
        out.push(&metrics::NODE_PASS_RUNS, &[], s.runs as f64);
        out.push(&metrics::NODE_PASS_ERRORS, &[], s.errors as f64);
        out.push(&metrics::NODE_PASS_SECONDS, &[], s.seconds);
        out.push(&metrics::NODE_PASS_NAMESPACES, &[], f64::from(s.out.meta.namespaces));
        out.push(&metrics::NODE_PASS_LISTENERS, &[], f64::from(s.out.meta.listeners));
        let lost = s.out.meta.namespaces_lost + s.out.meta.listeners_lost;
        out.push(&metrics::NODE_PASS_OMITTED, &[], f64::from(lost));
    }
}

fn load(btf: &std::path::Path) -> Result<PassProgram, String> {
    let data = std::fs::read(btf).map_err(|e| format!("{}: {e}", btf.display()))?;
    PassProgram::load(&data).map_err(|e| e.to_string())
}

impl State {
    /// The last pass followed every chain of the listening hash to its end, with
    /// buckets of the size it reads (`Meta::trouble` bits 1 and 2).
    fn hash_walked_whole(&self) -> bool {
        self.out.meta.trouble & 0b110 == 0
    }

    fn load_once(&mut self) {
        let Some(btf) = self.btf.take() else { return };
        let loaded = load(&btf);
        // The load parsed the kernel's whole BTF (tens of MB of heap, all freed): give it
        // back, as the drop counter does after its own load.
        crate::sys::release_free_heap();
        match loaded {
            Ok(p) => self.program = Some(Box::new(p)),
            Err(e) => log::info!("node pass: {e}; each namespace is read on its own"),
        }
    }

    fn in_use(&self, field: Field) -> bool {
        matches!(self.used[field.index()], Some(Ok(())))
    }

    /// Compares the last pass with the kernel's own answers in the exporter's
    /// namespace, and sets which fields are used.
    /// The own namespace's conntrack entries and TIME_WAIT sockets, as the kernel's
    /// own files say.
    fn own_counts(&mut self) -> (Option<u64>, Option<u64>) {
        let ct = self.ct_count.as_mut().and_then(|f| f.read_u64().ok());
        let mut st = crate::procfs::net::SockStat::default();
        let tw = self
            .sockstat
            .as_mut()
            .and_then(|f| f.read_with(|b| crate::procfs::net::parse_sockstat(b, &mut st)).ok())
            .and(st.tcp_tw);
        (ct, tw)
    }

    fn compare(&mut self, before: (Option<u64>, Option<u64>), after: (Option<u64>, Option<u64>)) {
        let verdicts = [
            self.compare_conntrack(before.0, after.0),
            self.compare_listeners(),
            self.compare_time_wait(before.1, after.1),
        ];
        for (f, verdict) in Field::ALL.into_iter().zip(verdicts) {
            let i = f.index();
            // A disagreement is taken once it repeats: a count moves between the reads.
            self.misses[i] = if verdict.is_ok() { 0 } else { self.misses[i] + 1 };
            if verdict.is_err() && self.misses[i] < TRIES {
                continue;
            }
            self.misses[i] = 0;
            if self.used[i].as_ref().map(Result::is_ok) != Some(verdict.is_ok()) {
                match &verdict {
                    Ok(()) => log::info!("node pass: {} read for every namespace in one pass", f.name()),
                    Err(why) => log::warn!("node pass: {} read per namespace: {why}", f.name()),
                }
            }
            self.used[i] = Some(verdict);
        }
    }

    fn own(&self) -> Option<&NsRecord> {
        self.out.namespaces.iter().find(|r| r.ino == self.own_ino)
    }

    fn compare_conntrack(&self, before: Option<u64>, after: Option<u64>) -> Result<(), String> {
        let (Some(before), Some(after)) = (before, after) else {
            return Err("nf_conntrack_count cannot be read to compare".into());
        };
        if self.out.meta.ct_found == 0 {
            return Err("conntrack's per-namespace data was not found (nf_conntrack not loaded?)".into());
        }
        let own = self.own().ok_or("the exporter's own namespace is not in the pass")?;
        within("conntrack entries", u64::from(own.ct_count), before, after)
    }

    fn compare_time_wait(&self, before: Option<u64>, after: Option<u64>) -> Result<(), String> {
        let (Some(before), Some(after)) = (before, after) else {
            return Err("sockstat cannot be read to compare".into());
        };
        let own = self.own().ok_or("the exporter's own namespace is not in the pass")?;
        within("TIME_WAIT sockets", u64::from(own.time_wait), before, after)
    }

    fn compare_listeners(&mut self) -> Result<(), String> {
        if !self.hash_walked_whole() {
            return Err(format!(
                "the listening hash was not walked whole (trouble {:#x})",
                self.out.meta.trouble
            ));
        }
        let Some(dump) = self.listen_dump.as_mut() else {
            return Err("no dump".into());
        };
        let mut kernel: Vec<(IpAddr, u16, u32)> = Vec::new();
        self.diag
            .with(|d| {
                dump.run(d, &mut |s: &TcpSock| {
                    if s.state == state::LISTEN {
                        kernel.push((s.local, s.local_port, s.wqueue));
                    }
                })
            })
            .map_err(|e| format!("the LISTEN dump to compare with failed: {e}"))?;
        let own = self.own_ino;
        let mut pass: Vec<(IpAddr, u16, u32)> = self
            .out
            .listeners
            .iter()
            .filter(|r| r.ino == own)
            .map(|r| (r.ip(), r.port, r.limit))
            .collect();
        kernel.sort_unstable();
        pass.sort_unstable();
        if kernel != pass {
            let k: HashSet<_> = kernel.iter().collect();
            let p: HashSet<_> = pass.iter().collect();
            let only_kernel = k.difference(&p).count();
            let only_pass = p.difference(&k).count();
            return Err(format!(
                "{} listeners in the pass, {} in sock_diag ({only_kernel} only in sock_diag, {only_pass} only in the pass)",
                pass.len(),
                kernel.len()
            ));
        }
        Ok(())
    }
}

/// Whether the pass's count `got` lies within the kernel's own counts read just
/// `before` and `after` it, give or take their difference (at least 2).
fn within(what: &str, got: u64, before: u64, after: u64) -> Result<(), String> {
    let (lo, hi) = (before.min(after), before.max(after));
    let slack = (hi - lo).max(2);
    if got + slack < lo || got > hi + slack {
        return Err(format!(
            "the pass counted {got} {what}, the kernel's file {before} then {after}"
        ));
    }
    Ok(())
}
