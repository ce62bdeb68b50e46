//! Who fills a conntrack table: when a namespace's table is at or above
//! `--collector.conntrack.breakdown-threshold` of its limit, its table is dumped over
//! ctnetlink at most every `--collector.conntrack.breakdown-interval`, on the slow lane,
//! and counted on the fly (nothing of an entry is kept): entries by protocol and state,
//! the top original sources (each named after the namespace, and so the pod, on the
//! node that owns the address) and the top original destinations.
//!
//! Bounded: each map holds at most [`MAP_CAP`] keys (later keys count in "other"), and
//! a dump stops at `--collector.conntrack.breakdown-timeout` (a cut breakdown is
//! served as such, `netpressure_conntrack_breakdown_complete` 0, and counted). Below
//! the threshold nothing is dumped; the last breakdown is served while the table is
//! under pressure and for two intervals after, so that Prometheus records it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::metrics;
use crate::netlink::ctnetlink::{CtDump, CtEntry, DumpEnd};
use crate::snapshot::Snapshot;
use crate::source::{top_k, AddrPortLabels, NsContext, Source, SourceError, Want};

/// The most distinct sources, and destinations, counted one by one in a breakdown.
pub const MAP_CAP: usize = 4096;

/// The protocol label of an IP protocol number: its name for the common ones, else
/// the number itself (`4` for IPIP, `50` for ESP): bounded at 256 values, and never
/// two protocols under one label, which would make two series of one label set.
pub fn protocol_label(p: u8) -> &'static str {
    static NUMBERS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        47 => "gre",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => NUMBERS.get_or_init(|| (0..=255u8).map(|n| n.to_string()).collect())[usize::from(p)].as_str(),
    }
}

/// The state label of an entry: the TCP state (`enum tcp_conntrack`), and for other
/// protocols what its status bits say: `assured`, `replied` (a reply seen, not yet
/// assured) or `unreplied` (the entries an early drop may evict).
pub fn state_label(e: &CtEntry) -> &'static str {
    if let Some(s) = e.tcp_state {
        return match s {
            0 => "none",
            1 => "syn_sent",
            2 => "syn_recv",
            3 => "established",
            4 => "fin_wait",
            5 => "close_wait",
            6 => "last_ack",
            7 => "time_wait",
            8 => "close",
            9 => "syn_sent2",
            _ => "other",
        };
    }
    if e.status & CtEntry::ASSURED != 0 {
        "assured"
    } else if e.status & CtEntry::SEEN_REPLY != 0 {
        "replied"
    } else {
        "unreplied"
    }
}

/// A destination: protocol, address, port (0 without ports).
pub type Destination = (u8, IpAddr, u16);

/// The counts of one dump.
#[derive(Debug, Default)]
pub struct Tally {
    pub total: u64,
    pub states: HashMap<(&'static str, &'static str), u64>,
    pub sources: HashMap<IpAddr, u64>,
    pub other_sources: u64,
    pub destinations: HashMap<Destination, u64>,
    pub other_destinations: u64,
}

impl Tally {
    /// Empties the counts, keeping the maps' memory for the next dump.
    pub fn clear(&mut self) {
        self.total = 0;
        self.states.clear();
        self.sources.clear();
        self.other_sources = 0;
        self.destinations.clear();
        self.other_destinations = 0;
    }

    pub fn add(&mut self, e: &CtEntry) {
        self.total += 1;
        *self
            .states
            .entry((protocol_label(e.protocol), state_label(e)))
            .or_default() += 1;
        let len = self.sources.len();
        match self.sources.get_mut(&e.source) {
            Some(n) => *n += 1,
            None if len < MAP_CAP => {
                self.sources.insert(e.source, 1);
            }
            None => self.other_sources += 1,
        }
        let key = (e.protocol, e.destination, e.destination_port);
        let len = self.destinations.len();
        match self.destinations.get_mut(&key) {
            Some(n) => *n += 1,
            None if len < MAP_CAP => {
                self.destinations.insert(key, 1);
            }
            None => self.other_destinations += 1,
        }
    }

    /// The `k` largest sources and destinations (ties by key, for a stable order),
    /// and what the rest add up to.
    pub fn rank(&self, k: usize) -> Ranked {
        let mut sources: Vec<(IpAddr, u64)> = self.sources.iter().map(|(a, n)| (*a, *n)).collect();
        let counted: u64 = sources.iter().map(|s| s.1).sum();
        top_k(&mut sources, k, |a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let shown: u64 = sources.iter().map(|s| s.1).sum();
        let mut destinations: Vec<(Destination, u64)> = self.destinations.iter().map(|(d, n)| (*d, *n)).collect();
        let counted_d: u64 = destinations.iter().map(|d| d.1).sum();
        top_k(&mut destinations, k, |a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let shown_d: u64 = destinations.iter().map(|d| d.1).sum();
        let mut states: Vec<((&'static str, &'static str), u64)> = self.states.iter().map(|(s, n)| (*s, *n)).collect();
        states.sort_unstable();
        Ranked {
            total: self.total,
            states,
            sources,
            other_sources: counted - shown + self.other_sources,
            destinations,
            other_destinations: counted_d - shown_d + self.other_destinations,
        }
    }
}

/// What a breakdown serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranked {
    pub total: u64,
    pub states: Vec<((&'static str, &'static str), u64)>,
    pub sources: Vec<(IpAddr, u64)>,
    pub other_sources: u64,
    pub destinations: Vec<(Destination, u64)>,
    pub other_destinations: u64,
}

/// The namespace on the node that owns an address, as label values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub netns: String,
    pub pod: Option<(String, String)>,
}

/// Which namespace on the node owns which address: filled by the slow lane from each
/// sampled namespace's address dump, read by every namespace's breakdown.
#[derive(Debug, Default)]
pub struct Owners {
    map: RwLock<HashMap<IpAddr, Arc<Owner>>>,
    /// A breakdown found a source that names no owner: the slow lane looks for new
    /// namespaces and reads every namespace's addresses before its next round.
    wanted: std::sync::atomic::AtomicBool,
}

impl Owners {
    pub fn get(&self, a: &IpAddr) -> Option<Arc<Owner>> {
        crate::sync::read(&self.map).get(a).cloned()
    }

    /// Whether `a` could name an owner on this node but names none yet.
    pub fn unknown(&self, a: &IpAddr) -> bool {
        names_one_namespace(a) && self.get(a).is_none()
    }

    /// Asks the slow lane for a refresh (see [`Owners::take_wanted`]).
    pub fn want_refresh(&self) {
        self.wanted.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a refresh is asked for (without taking the ask).
    pub fn wanted(&self) -> bool {
        self.wanted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a refresh was asked for since the last call.
    pub fn take_wanted(&self) -> bool {
        self.wanted.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the map. Loopback and link-local addresses exist in every namespace
    /// and name none; an address found in two namespaces names neither.
    pub fn replace(&self, all: impl IntoIterator<Item = (IpAddr, Arc<Owner>)>) {
        let mut map: HashMap<IpAddr, Arc<Owner>> = HashMap::new();
        let mut ambiguous = Vec::new();
        for (a, owner) in all {
            if !names_one_namespace(&a) {
                continue;
            }
            if let Some(prev) = map.insert(a, Arc::clone(&owner)) {
                if prev != owner {
                    ambiguous.push(a);
                }
            }
        }
        for a in ambiguous {
            map.remove(&a);
        }
        *crate::sync::write(&self.map) = map;
    }

    pub fn len(&self) -> usize {
        crate::sync::read(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn names_one_namespace(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

/// The last breakdown taken, with how it went.
#[derive(Debug)]
struct Taken {
    ranked: Ranked,
    at: Instant,
    unix: f64,
    duration: Duration,
    complete: bool,
}

pub struct Breakdown {
    ctx: Arc<NsContext>,
    interval: Duration,
    timeout: Duration,
    top: usize,
    tally: Tally,
    last: Option<Taken>,
    /// The last breakdown names a source no namespace owns yet: it is served from the
    /// next round on, after the slow lane has refreshed the owners (a new pod's
    /// address is named in the first breakdown that shows it).
    held: bool,
    dumps: u64,
    cut: u64,
    labels: AddrPortLabels,
}

impl Breakdown {
    pub fn new(cfg: &Config, ctx: &Arc<NsContext>) -> Self {
        Self {
            ctx: Arc::clone(ctx),
            interval: cfg.breakdown_interval,
            timeout: cfg.breakdown_timeout,
            top: cfg.breakdown_top,
            tally: Tally::default(),
            last: None,
            held: false,
            dumps: 0,
            cut: 0,
            labels: AddrPortLabels::default(),
        }
    }

    /// Whether the table is at or above the threshold (0: always; 1: never).
    fn under_pressure(&self) -> bool {
        self.ctx.breakdown_pressure(self.ctx.conntrack_fill())
    }

    /// Dumps and counts the table now.
    ///
    /// # Errors
    /// The socket cannot be opened (outside the namespace: the lane enters and runs
    /// again) or the dump fails.
    pub fn take(&mut self, now: Instant) -> Result<(), SourceError> {
        let mut dump = CtDump::open()?;
        self.tally.clear();
        let tally = &mut self.tally;
        let started = Instant::now();
        let end = dump.run(started + self.timeout, |e| tally.add(e))?;
        let duration = started.elapsed();
        let complete = end == DumpEnd::Complete;
        self.dumps += 1;
        self.cut += u64::from(!complete);
        self.last = Some(Taken {
            ranked: self.tally.rank(self.top),
            at: now,
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            duration,
            complete,
        });
        Ok(())
    }

    fn serve(&mut self, out: &mut Snapshot) {
        let Some(t) = &self.last else { return };
        let r = &t.ranked;
        for ((protocol, state), n) in &r.states {
            out.push(
                &metrics::CT_BREAKDOWN_STATE,
                &[("protocol", protocol), ("state", state)],
                *n as f64,
            );
        }
        for (addr, n) in &r.sources {
            let owner = self.ctx.node.owners.get(addr);
            let (a, _) = self.labels.format(*addr, 0);
            let mut labels = vec![("source_address", a)];
            if let Some(o) = &owner {
                labels.push(("source_netns", o.netns.as_str()));
                if let Some((ns, pod)) = &o.pod {
                    labels.push(("source_namespace", ns.as_str()));
                    labels.push(("source_pod", pod.as_str()));
                }
            }
            out.push(&metrics::CT_TOP_SOURCES, &labels, *n as f64);
        }
        if r.other_sources > 0 {
            out.push(
                &metrics::CT_TOP_SOURCES,
                &[("source_address", "other")],
                r.other_sources as f64,
            );
        }
        for ((protocol, addr, port), n) in &r.destinations {
            let (a, p) = self.labels.format(*addr, *port);
            out.push(
                &metrics::CT_TOP_DESTINATIONS,
                &[
                    ("destination_address", a),
                    ("destination_port", p),
                    ("protocol", protocol_label(*protocol)),
                ],
                *n as f64,
            );
        }
        if r.other_destinations > 0 {
            out.push(
                &metrics::CT_TOP_DESTINATIONS,
                &[("destination_address", "other")],
                r.other_destinations as f64,
            );
        }
        out.push(&metrics::CT_BREAKDOWN_DUMPED, &[], r.total as f64);
        out.push(&metrics::CT_BREAKDOWN_DURATION, &[], t.duration.as_secs_f64());
        out.push(&metrics::CT_BREAKDOWN_COMPLETE, &[], f64::from(u8::from(t.complete)));
        out.push(&metrics::CT_BREAKDOWN_TIMESTAMP, &[], t.unix);
    }
}

impl Source for Breakdown {
    fn name(&self) -> &'static str {
        "conntrack_breakdown"
    }

    /// Every round of the slow lane while the table is under pressure or a breakdown is
    /// still served; not at all otherwise (the fast lane wakes the slow lane when the
    /// fill reaches the threshold).
    fn want(&self) -> Want {
        if self.under_pressure() || self.last.is_some() || self.held {
            Want::Now
        } else {
            Want::Not
        }
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let now = Instant::now();
        let pressure = self.under_pressure();
        let due = pressure
            && self
                .last
                .as_ref()
                .is_none_or(|t| now.duration_since(t.at) >= self.interval);
        let was_held = std::mem::take(&mut self.held);
        if due {
            self.take(now)?;
            if let Some(t) = &self.last {
                if t.ranked.sources.iter().any(|(a, _)| self.ctx.node.owners.unknown(a)) {
                    self.ctx.node.owners.want_refresh();
                    // Once: a source no namespace on the node owns (a client outside
                    // the node) must not hold every breakdown back.
                    self.held = !was_held;
                }
            }
        }
        if self.dumps > 0 {
            out.push(&metrics::CT_BREAKDOWNS, &[], self.dumps as f64);
            out.push(&metrics::CT_BREAKDOWNS_CUT, &[], self.cut as f64);
        }
        // Served while under pressure, and for two intervals after, so that a scrape
        // records it; then the series end (Prometheus keeps their history).
        let recent = self
            .last
            .as_ref()
            .is_some_and(|t| now.duration_since(t.at) < self.interval * 2);
        if (pressure || recent) && !self.held {
            self.serve(out);
        } else if !pressure && !recent && self.last.is_some() {
            // Over: give back the maps' memory (up to MAP_CAP keys each); the next
            // breakdown, if ever, grows them again.
            self.last = None;
            self.tally = Tally::default();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(protocol: u8, source: [u8; 4], destination: [u8; 4], port: u16, tcp: Option<u8>, status: u32) -> CtEntry {
        CtEntry {
            protocol,
            source: IpAddr::from(source),
            destination: IpAddr::from(destination),
            destination_port: port,
            tcp_state: tcp,
            status,
        }
    }

    #[test]
    fn the_maps_are_capped_and_the_rest_counts_as_other() {
        let mut t = Tally::default();
        for i in 0..(MAP_CAP as u32 + 100) {
            let b = i.to_be_bytes();
            t.add(&entry(17, [10, b[1], b[2], b[3]], [10, 0, 0, 1], 53, None, 0));
        }
        assert_eq!(t.sources.len(), MAP_CAP);
        assert_eq!(t.other_sources, 100);
        let r = t.rank(3);
        assert_eq!(r.sources.len(), 3);
        assert_eq!(
            r.other_sources,
            MAP_CAP as u64 + 100 - 3,
            "the other bucket holds the rest"
        );
        assert_eq!(r.total, MAP_CAP as u64 + 100);
        assert_eq!(r.destinations, [((17, IpAddr::from([10, 0, 0, 1]), 53), r.total)]);
        assert_eq!(r.states, [(("udp", "unreplied"), r.total)]);
    }

    #[test]
    fn ranking_is_by_count_then_address() {
        let mut t = Tally::default();
        for (src, n) in [([10, 0, 0, 3], 5), ([10, 0, 0, 1], 5), ([10, 0, 0, 2], 9)] {
            for _ in 0..n {
                t.add(&entry(6, src, [10, 96, 0, 10], 443, Some(3), CtEntry::ASSURED));
            }
        }
        let r = t.rank(2);
        assert_eq!(
            r.sources,
            [(IpAddr::from([10, 0, 0, 2]), 9), (IpAddr::from([10, 0, 0, 1]), 5)]
        );
        assert_eq!(r.other_sources, 5);
    }

    #[test]
    fn addresses_every_namespace_has_name_none_and_shared_ones_neither_owner() {
        let owners = Owners::default();
        let a = Arc::new(Owner {
            netns: "1".into(),
            pod: None,
        });
        let b = Arc::new(Owner {
            netns: "2".into(),
            pod: None,
        });
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        owners.replace([
            (ip("127.0.0.1"), Arc::clone(&a)),
            (ip("::1"), Arc::clone(&a)),
            (ip("fe80::1"), Arc::clone(&a)),
            (ip("10.0.0.5"), Arc::clone(&a)),
            (ip("10.0.0.9"), Arc::clone(&a)),
            (ip("10.0.0.9"), Arc::clone(&b)),
            (ip("fd00::7"), Arc::clone(&b)),
        ]);
        assert_eq!(owners.len(), 2);
        assert_eq!(owners.get(&ip("10.0.0.5")), Some(a));
        assert_eq!(owners.get(&ip("fd00::7")), Some(b));
        assert_eq!(owners.get(&ip("10.0.0.9")), None);
    }
}
