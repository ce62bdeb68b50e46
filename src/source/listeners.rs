//! Per-listener accept queues, every sample, from a LISTEN-only sock_diag dump (IPv4
//! and IPv6 in one request; the kernel skips the established hash for it, so it stays
//! cheap however many connections the node holds), and SYN_RECV request sockets per
//! listener every `--scan.interval` on the slow lane (that dump walks the established
//! hash), left for the fast part in the namespace's shared context.
//!
//! Cardinality is bounded by `--collector.listeners.max`: the fullest listeners are
//! kept (by accept-queue fill, its recent maximum included, or SYN-queue fill against
//! tcp_max_syn_backlog), ties broken by port, and the rest counted in
//! `netpressure_tcp_listeners_omitted`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::config::Config;
use crate::metrics;
use crate::netlink::sock_diag::{state, Filter, LazySockDiag, SockDiag, TcpDump, TcpSock};
use crate::netlink::NetlinkError;
use crate::snapshot::Snapshot;
use crate::source::settings::Sysctl;
use crate::source::{top_k, AddrPortLabels, NsContext, Source, SourceError, Want};

const LISTEN: &str = "sock_diag LISTEN";
const SYN: &str = "sock_diag SYN_RECV";

#[derive(Debug, Clone, Copy)]
struct Listener {
    addr: IpAddr,
    port: u16,
    /// Accept queue and limit of the group's fullest socket.
    queue: u32,
    limit: u32,
    /// Sockets listening on this address and port: more than one in an SO_REUSEPORT
    /// group (one per worker in ingress-nginx, envoy, ...), each with its own queue.
    sockets: u32,
    syn_recv: Option<u32>,
    /// The highest queue seen within about the peak window, for ranking: a listener
    /// whose queue spiked and drained keeps its place (and so its `_peak` series).
    recent_queue: u32,
}

/// How full an accept queue is: the socket of a group that drops first.
fn accept_fill(queue: u32, limit: u32) -> f64 {
    if limit > 0 {
        f64::from(queue) / f64::from(limit)
    } else if queue > 0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// Folds the sockets of a LISTEN dump into one listener per (address, port): an
/// SO_REUSEPORT group becomes one listener with the queue and limit of its fullest
/// socket (relative to its limit) and the number of its sockets.
fn fold_reuseport(listeners: &mut Vec<Listener>) {
    listeners.sort_unstable_by_key(|l| (l.addr, l.port));
    listeners.dedup_by(|later, kept| {
        if (later.addr, later.port) != (kept.addr, kept.port) {
            return false;
        }
        kept.sockets += later.sockets;
        // The node pass reads each socket's SYN queue: a group's is their sum.
        if let Some(n) = later.syn_recv {
            kept.syn_recv = Some(kept.syn_recv.unwrap_or(0) + n);
        }
        if accept_fill(later.queue, later.limit) > accept_fill(kept.queue, kept.limit) {
            kept.queue = later.queue;
            kept.limit = later.limit;
        }
        true
    });
}

impl Listener {
    /// How close this listener is to dropping connections, for ranking.
    fn fill(&self, max_syn_backlog: f64) -> f64 {
        let accept = accept_fill(self.queue.max(self.recent_queue), self.limit);
        let syn = match self.syn_recv {
            Some(n) if max_syn_backlog > 0.0 => f64::from(n) / max_syn_backlog,
            _ => 0.0,
        };
        accept.max(syn)
    }
}

/// The recent maximum queue of each listener, kept for `window` after it was seen (an
/// upper bound of the sliding maximum that is cheap to keep), and stamped with the
/// sample that last saw the listener so that closed listeners are forgotten.
#[derive(Debug, Default)]
struct RecentQueues {
    by_listener: HashMap<(IpAddr, u16), (u32, Instant, u64)>,
    generation: u64,
}

impl RecentQueues {
    fn update(&mut self, listeners: &mut [Listener], now: Instant, window: Duration) {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        for l in listeners.iter_mut() {
            let e = self
                .by_listener
                .entry((l.addr, l.port))
                .or_insert((l.queue, now, generation));
            if l.queue >= e.0 || now.saturating_duration_since(e.1) > window {
                *e = (l.queue, now, generation);
            }
            e.2 = generation;
            l.recent_queue = e.0;
        }
        self.by_listener.retain(|_, e| e.2 == generation);
    }
}

/// What a namespace's listeners source and its SYN_RECV scan share across the lanes.
#[derive(Debug, Default)]
pub struct SynShared {
    /// SYN_RECV request sockets by (local address, local port) at the last scan; `None`
    /// until the first.
    pub counts: Option<HashMap<(IpAddr, u16), u32>>,
    /// What the last LISTEN sample saw (`None` before the first), so that the scan can
    /// skip walks that cannot find anything.
    pub listeners: Option<(usize, bool)>,
    /// The smallest accept-queue limit among those listeners: the SYN queue of each is
    /// bounded by it, so the scan's tolerance is a share of it.
    pub smallest_backlog: Option<u32>,
    /// The last sample took the listeners from the node pass, SYN queues included: the
    /// scan has nothing to add.
    pub from_pass: bool,
}

/// The fast part: the LISTEN dump every sample.
pub struct Listeners {
    diag: LazySockDiag,
    listen_dump: TcpDump,
    max: usize,
    ports: Option<Vec<(u16, u16)>>,
    listeners: Vec<Listener>,
    recent: RecentQueues,
    window: Duration,
    ctx: Arc<NsContext>,
    order: Vec<usize>,
    labels: AddrPortLabels,
}

impl Listeners {
    pub fn new(cfg: &Config, ctx: &Arc<NsContext>) -> Self {
        Self {
            diag: LazySockDiag::default(),
            listen_dump: TcpDump::new(LISTEN, state::bit(state::LISTEN), Filter::None),
            max: cfg.listeners_max,
            ports: cfg.listeners_ports.clone(),
            listeners: Vec::new(),
            recent: RecentQueues::default(),
            window: cfg.peak_window,
            ctx: Arc::clone(ctx),
            order: Vec::new(),
            labels: AddrPortLabels::default(),
        }
    }

    fn dump_listeners(&mut self) -> Result<(), NetlinkError> {
        let Self {
            diag,
            listen_dump,
            ports,
            listeners,
            ..
        } = self;
        listeners.clear();
        diag.with(|diag| {
            listen_dump.run(diag, &mut |s: &TcpSock| {
                if s.state == state::LISTEN && port_wanted(ports.as_deref(), s.local_port) {
                    listeners.push(Listener {
                        addr: s.local,
                        port: s.local_port,
                        queue: s.rqueue,
                        limit: s.wqueue,
                        sockets: 1,
                        syn_recv: None,
                        recent_queue: 0,
                    });
                }
            })
        })?;
        fold_reuseport(listeners);
        Ok(())
    }

    /// This namespace's listeners from the node pass, with their SYN queues, when it
    /// serves them (another namespace's, with the pass in use): `false` otherwise.
    fn take_from_pass(&mut self) -> bool {
        let Self {
            ports, listeners, ctx, ..
        } = self;
        listeners.clear();
        let served = ctx.pass_listeners(|r| {
            if port_wanted(ports.as_deref(), r.port) {
                listeners.push(Listener {
                    addr: r.ip(),
                    port: r.port,
                    queue: r.queue,
                    limit: r.limit,
                    sockets: 1,
                    syn_recv: Some(r.syn_queue),
                    recent_queue: 0,
                });
            }
        });
        if served {
            fold_reuseport(listeners);
        }
        served
    }

    /// Tells the scan what this sample saw, and attributes the last scan's request
    /// sockets to the listeners that own them (unless the node pass read them).
    fn exchange_with_scan(&mut self, from_pass: bool) {
        let mut shared = crate::sync::lock(&self.ctx.from_slow.syn);
        let any_v6 = self.listeners.iter().any(|l| l.addr.is_ipv6());
        shared.listeners = Some((self.listeners.len(), any_v6));
        shared.smallest_backlog = self.listeners.iter().map(|l| l.limit).min();
        shared.from_pass = from_pass;
        if from_pass {
            return;
        }
        let Some(counts) = shared.counts.as_ref() else { return };
        for l in &mut self.listeners {
            l.syn_recv = Some(0);
        }
        for (&(addr, port), &n) in counts {
            if let Some(i) = owner(&self.listeners, addr, port) {
                if let Some(c) = self.listeners[i].syn_recv.as_mut() {
                    *c += n;
                }
            }
        }
    }
}

/// The slow part: SYN_RECV request sockets per listener every scan. The dump walks the
/// whole established hash (about 3.5 ms on 262,144 buckets), so it runs on the slow
/// lane, and not at all when the last LISTEN sample saw no listener (request sockets
/// belong to a listener, and IPv6 ones to an IPv6 listener).
///
/// Nor on its cadence when the evidence shows the walk could find next to nothing: the
/// last walk found no request socket, and fewer TCP segments have arrived in the
/// namespace since (snmp `InSegs`, read every counter interval) than 1/8 of the smallest
/// listener's backlog. Every request socket is made by an arriving SYN, so then no
/// listener can have more than that share of its SYN queue (which its backlog bounds)
/// unseen, far below the alert.
pub struct SynScan {
    syn_dump: TcpDump,
    ctx: Arc<NsContext>,
    counts: HashMap<(IpAddr, u16), u32>,
    /// `InSegs` when the last walk ran, if it found no request socket.
    quiet_since: Option<u64>,
}

/// The share of the smallest backlog that unseen request sockets may reach.
const SYN_EVIDENCE_SHARE: u32 = 8;

impl SynScan {
    pub fn new(ctx: &Arc<NsContext>) -> Self {
        Self {
            syn_dump: TcpDump::new(SYN, state::bit(state::SYN_RECV), Filter::None),
            ctx: Arc::clone(ctx),
            counts: HashMap::new(),
            quiet_since: None,
        }
    }
}

impl Source for SynScan {
    fn name(&self) -> &'static str {
        "listeners_syn_recv"
    }

    fn want(&self) -> Want {
        let (smallest, from_pass) = {
            let shared = crate::sync::lock(&self.ctx.from_slow.syn);
            (shared.smallest_backlog, shared.from_pass)
        };
        if from_pass {
            return Want::Not;
        }
        match (self.quiet_since, self.ctx.tcp_in_segs(), smallest) {
            (Some(then), Some(now), Some(backlog))
                if now.wrapping_sub(then) < u64::from((backlog / SYN_EVIDENCE_SHARE).max(1)) =>
            {
                Want::Not
            }
            _ => Want::Cadence,
        }
    }

    fn sample(&mut self, _out: &mut Snapshot) -> Result<(), SourceError> {
        let seen = crate::sync::lock(&self.ctx.from_slow.syn).listeners;
        self.counts.clear();
        if seen.is_none_or(|(n, _)| n > 0) {
            self.syn_dump.skip_v6 = seen.is_some_and(|(_, any_v6)| !any_v6);
            let counts = &mut self.counts;
            with_slow_diag(&self.ctx, |diag| {
                self.syn_dump.run(diag, &mut |s: &TcpSock| {
                    if s.state == state::SYN_RECV || s.state == state::NEW_SYN_RECV {
                        *counts.entry((s.local, s.local_port)).or_insert(0) += 1;
                    }
                })
            })?;
        }
        self.quiet_since = if self.counts.is_empty() {
            self.ctx.tcp_in_segs()
        } else {
            None
        };
        let mut shared = crate::sync::lock(&self.ctx.from_slow.syn);
        let counts = shared.counts.get_or_insert_with(HashMap::new);
        std::mem::swap(counts, &mut self.counts);
        Ok(())
    }
}

/// Runs `f` on the namespace's slow-lane sock_diag socket, shared by the SYN_RECV scan
/// and the remotes scan: one socket, not two.
///
/// # Errors
/// Opening the socket, or what `f` returns.
pub fn with_slow_diag(
    ctx: &NsContext,
    f: impl FnOnce(&mut SockDiag) -> Result<(), NetlinkError>,
) -> Result<(), NetlinkError> {
    crate::sync::lock(&ctx.slow_diag).with(f)
}

fn port_wanted(ranges: Option<&[(u16, u16)]>, port: u16) -> bool {
    ranges.is_none_or(|r| r.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port)))
}

/// The listener a request socket with local `addr`:`port` belongs to: the one bound to
/// that address; else the wildcard listener of the address's own family; else, for an
/// IPv4 address, a wildcard IPv6 listener (dual-stack, taking IPv4 connections).
///
/// A dual-stack IPv6 listener's IPv4 request sockets carry an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`), which is IPv6 here and so finds `[::]` even when `0.0.0.0` listens
/// on the same port; a plain IPv4 address finds `0.0.0.0` first, which, when both
/// listen, is the socket that took the connection (`[::]` is then v6-only: the kernel
/// refuses the pair otherwise).
fn owner(listeners: &[Listener], addr: IpAddr, port: u16) -> Option<usize> {
    let on_port = |f: &dyn Fn(&Listener) -> bool| listeners.iter().position(|l| l.port == port && f(l));
    on_port(&|l| l.addr == addr)
        .or_else(|| on_port(&|l| l.addr.is_unspecified() && l.addr.is_ipv4() == addr.is_ipv4()))
        .or_else(|| on_port(&|l| l.addr.is_unspecified() && l.addr.is_ipv6() && addr.is_ipv4()))
}

impl Source for Listeners {
    fn name(&self) -> &'static str {
        "listeners"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let from_pass = self.take_from_pass();
        if !from_pass {
            self.dump_listeners()?;
        }
        self.exchange_with_scan(from_pass);
        self.recent.update(&mut self.listeners, Instant::now(), self.window);
        let max_syn_backlog = self.ctx.settings().get(Sysctl::TcpMaxSynBacklog);
        let backlog = max_syn_backlog.map_or(0.0, |v| v as f64);
        let listeners = &self.listeners;
        self.order.clear();
        self.order.extend(0..listeners.len());
        top_k(&mut self.order, self.max, |&a, &b| {
            let (la, lb) = (&listeners[a], &listeners[b]);
            lb.fill(backlog)
                .partial_cmp(&la.fill(backlog))
                .unwrap_or(Ordering::Equal)
                .then(la.port.cmp(&lb.port))
                .then(la.addr.cmp(&lb.addr))
        });
        let kept = self.order.len();
        for &i in &self.order {
            let l = listeners[i];
            let (addr, port) = self.labels.format(l.addr, l.port);
            let labels = [("address", addr), ("port", port)];
            out.push(&metrics::LISTEN_QUEUE, &labels, f64::from(l.queue));
            out.push(&metrics::LISTEN_QUEUE_LIMIT, &labels, f64::from(l.limit));
            out.push(&metrics::LISTEN_SOCKETS, &labels, f64::from(l.sockets));
            if let Some(n) = l.syn_recv {
                out.push(&metrics::SYN_RECV, &labels, f64::from(n));
            }
        }
        out.push(&metrics::LISTENERS, &[], listeners.len() as f64);
        out.push(&metrics::LISTENERS_OMITTED, &[], (listeners.len() - kept) as f64);
        if let Some(v) = max_syn_backlog {
            out.push(&metrics::MAX_SYN_BACKLOG, &[], v as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(port: u16, queue: u32) -> Listener {
        Listener {
            addr: IpAddr::from([127, 0, 0, 1]),
            port,
            queue,
            limit: 10,
            sockets: 1,
            syn_recv: None,
            recent_queue: 0,
        }
    }

    fn at(addr: &str, port: u16, queue: u32, limit: u32) -> Listener {
        Listener {
            addr: addr.parse().unwrap(),
            limit,
            ..listener(port, queue)
        }
    }

    #[test]
    fn a_reuseport_group_is_one_listener_with_its_fullest_socket() {
        // Three workers on 127.0.0.1:8080 (limits 100, 10, 100) and one on another port.
        let mut ls = vec![
            at("127.0.0.1", 8080, 50, 100),
            at("127.0.0.1", 9090, 1, 10),
            at("127.0.0.1", 8080, 9, 10),
            at("127.0.0.1", 8080, 60, 100),
            at("::1", 8080, 0, 10),
        ];
        fold_reuseport(&mut ls);
        let g: Vec<_> = ls
            .iter()
            .map(|l| (l.addr.to_string(), l.port, l.queue, l.limit, l.sockets))
            .collect();
        assert_eq!(
            g,
            [
                ("127.0.0.1".into(), 8080, 9, 10, 3),
                ("127.0.0.1".into(), 9090, 1, 10, 1),
                ("::1".into(), 8080, 0, 10, 1),
            ]
        );
    }

    #[test]
    fn request_sockets_go_to_the_listener_of_their_family() {
        // 0.0.0.0:80 beside a v6-only [::]:80: IPv4 request sockets are the IPv4 one's.
        let both = [at("::", 80, 0, 10), at("0.0.0.0", 80, 0, 10)];
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(owner(&both, v4, 80), Some(1));
        assert_eq!(owner(&both, v6, 80), Some(0));
        assert_eq!(owner(&both, mapped, 80), Some(0));
        // A dual-stack [::]:80 alone takes IPv4 too; 0.0.0.0 alone never takes IPv6.
        assert_eq!(owner(&both[..1], v4, 80), Some(0));
        assert_eq!(owner(&both[1..], v6, 80), None);
        // A listener bound to the address wins over any wildcard.
        let exact = [at("0.0.0.0", 80, 0, 10), at("127.0.0.1", 80, 0, 10)];
        assert_eq!(owner(&exact, v4, 80), Some(1));
        assert_eq!(owner(&exact, v4, 81), None);
    }

    #[test]
    fn a_drained_spike_keeps_its_rank_for_the_window() {
        let window = Duration::from_secs(60);
        let t0 = Instant::now();
        let mut recent = RecentQueues::default();
        let mut ls = vec![listener(80, 9), listener(443, 1)];
        recent.update(&mut ls, t0, window);
        // Port 80 drained; 443 now has the longer queue, but 80 spiked to 9 of 10.
        let mut ls = vec![listener(80, 0), listener(443, 2)];
        recent.update(&mut ls, t0 + Duration::from_secs(30), window);
        assert_eq!(ls[0].recent_queue, 9);
        assert!(ls[0].fill(0.0) > ls[1].fill(0.0));
        // After the window, the spike is forgotten.
        let mut ls = vec![listener(80, 0), listener(443, 2)];
        recent.update(&mut ls, t0 + Duration::from_secs(61), window);
        assert_eq!(ls[0].recent_queue, 0);
        assert!(ls[0].fill(0.0) < ls[1].fill(0.0));
        // A closed listener is forgotten at once.
        let mut ls = vec![listener(443, 2)];
        recent.update(&mut ls, t0 + Duration::from_secs(62), window);
        assert_eq!(recent.by_listener.len(), 1);
    }
}
