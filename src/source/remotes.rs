//! Local-port pressure per remote endpoint: every `--scan.interval`, on the slow lane,
//! one sock_diag dump (both address families in one walk of
//! the established hash) of the sockets whose local port lies in `ip_local_port_range`
//! (the kernel filters with bytecode before copying anything out), counted per remote
//! (address, port) and state. Ports run out per (local address, remote address, remote
//! port): a remote holding most of `netpressure_local_port_range_size` is about to make
//! `connect()` fail with EADDRNOTAVAIL.
//!
//! Only the top `--collector.remotes.top` remotes by socket count are served.
//!
//! The walk costs the same whatever the namespace holds (the hash is the node's), so it
//! runs only when it could find something: while the namespace's TCP sockets (sockstat's
//! in use plus TIME_WAIT, read every sample by the fast lane) are at least 1/8 of the
//! port range. Below that no remote can hold more than 1/8 of the range, and the scan is
//! skipped (`netpressure_tcp_remotes_scan_skipped`). When the sockets reach it, the fast
//! lane wakes the slow lane and the scan runs at once, not at the next scan mark.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::metrics;
use crate::netlink::sock_diag::{state, Filter, TcpDump, TcpSock};
use crate::snapshot::Snapshot;
use crate::source::listeners::with_slow_diag;
use crate::source::{top_k, AddrPortLabels, NsContext, Source, SourceError, Want};

const DUMP: &str = "sock_diag ephemeral-port sockets";

/// Every state of a socket that holds its local port, but LISTEN and request sockets.
const STATES: u32 = state::bit(state::ESTABLISHED)
    | state::bit(state::SYN_SENT)
    | state::bit(state::FIN_WAIT1)
    | state::bit(state::FIN_WAIT2)
    | state::bit(state::TIME_WAIT)
    | state::bit(state::CLOSE_WAIT)
    | state::bit(state::LAST_ACK)
    | state::bit(state::CLOSING);

/// Counts per remote, indexed by [`slot`].
type Counts = [u64; 3];
const STATE_LABELS: [&str; 3] = ["time_wait", "established", "other"];

fn slot(s: &TcpSock) -> usize {
    match s.state {
        // A TIME_WAIT record reports its substate: FIN_WAIT2 for an orphaned FIN_WAIT2.
        state::TIME_WAIT => 0,
        state::ESTABLISHED => 1,
        _ => 2,
    }
}

/// IPv4-mapped IPv6 remotes (a dual-stack socket talking IPv4) are served as IPv4.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// Ports in `ip_local_port_range` (`lo`..=`hi`).
pub fn range_size((lo, hi): (u16, u16)) -> u64 {
    u64::from(hi.saturating_sub(lo)) + 1
}

/// Counts the sockets of one dump into `counts`.
pub fn tally(counts: &mut HashMap<(IpAddr, u16), Counts>, s: &TcpSock) {
    counts.entry((canonical(s.remote), s.remote_port)).or_default()[slot(s)] += 1;
}

pub struct Remotes {
    ctx: Arc<NsContext>,
    range: Option<(u16, u16)>,
    dump: Option<TcpDump>,
    top: usize,
    counts: HashMap<(IpAddr, u16), Counts>,
    ranked: Vec<((IpAddr, u16), Counts)>,
    total: usize,
    labels: AddrPortLabels,
    /// The last run skipped the walk (too few sockets).
    skipped: bool,
}

impl Remotes {
    pub fn new(cfg: &Config, ctx: &Arc<NsContext>) -> Self {
        Self {
            ctx: Arc::clone(ctx),
            range: None,
            dump: None,
            top: cfg.remotes_top,
            counts: HashMap::new(),
            ranked: Vec::new(),
            total: 0,
            labels: AddrPortLabels::default(),
            skipped: false,
        }
    }

    /// Whether the namespace holds too few sockets for any remote to matter; `None`
    /// while the evidence is unknown (sockstat off or not read yet, no port range).
    fn too_few(&self) -> Option<bool> {
        Some(self.ctx.tcp_sockets()? < self.ctx.remotes_evidence()?)
    }

    /// Takes the port range from the namespace's settings, dumps and ranks: what every
    /// `--scan.interval` does.
    ///
    /// # Errors
    /// The settings have no port range, or the dump fails.
    pub fn scan(&mut self) -> Result<(), SourceError> {
        let range = self
            .ctx
            .settings()
            .port_range
            .ok_or(SourceError::NotYetRead("ip_local_port_range in this namespace"))?;
        if self.range != Some(range) {
            let f = Filter::LocalPortRange(range.0, range.1);
            self.dump = Some(TcpDump::new(DUMP, STATES, f));
            self.range = Some(range);
        }
        let Self {
            ctx,
            dump: Some(dump),
            counts,
            ..
        } = self
        else {
            return Ok(());
        };
        counts.clear();
        with_slow_diag(ctx, |diag| dump.run(diag, &mut |s: &TcpSock| tally(counts, s)))?;
        self.rank();
        Ok(())
    }

    fn rank(&mut self) {
        self.ranked.clear();
        self.ranked.extend(self.counts.iter().map(|(k, v)| (*k, *v)));
        self.total = self.ranked.len();
        top_k(&mut self.ranked, self.top, |a, b| {
            let (ta, tb): (u64, u64) = (a.1.iter().sum(), b.1.iter().sum());
            tb.cmp(&ta).then(a.0.cmp(&b.0))
        });
    }
}

impl Source for Remotes {
    fn name(&self) -> &'static str {
        "remotes"
    }

    /// At once when the sockets reach the evidence share after a skipped scan (or fall
    /// below it after a real one, to stop serving its remotes); never while they stay
    /// below.
    fn want(&self) -> Want {
        match self.too_few() {
            Some(true) if self.skipped => Want::Not,
            Some(true) => Want::Now,
            Some(false) if self.skipped => Want::Now,
            _ => Want::Cadence,
        }
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        if self.too_few() == Some(true) {
            self.skipped = true;
            if let Some(range) = self.ctx.settings().port_range {
                out.push(&metrics::PORT_RANGE_SIZE, &[], range_size(range) as f64);
            }
            out.push(&metrics::REMOTES_SKIPPED, &[], 1.0);
            return Ok(());
        }
        self.skipped = false;
        self.scan()?;
        for ((addr, port), counts) in &self.ranked {
            let (addr, port) = self.labels.format(*addr, *port);
            for (label, n) in STATE_LABELS.iter().zip(counts) {
                out.push(
                    &metrics::REMOTE_SOCKETS,
                    &[("remote_address", addr), ("remote_port", port), ("state", label)],
                    *n as f64,
                );
            }
        }
        if let Some(range) = self.range {
            out.push(&metrics::PORT_RANGE_SIZE, &[], range_size(range) as f64);
        }
        out.push(&metrics::REMOTES_SKIPPED, &[], 0.0);
        out.push(&metrics::REMOTES, &[], self.total as f64);
        out.push(&metrics::REMOTES_OMITTED, &[], (self.total - self.ranked.len()) as f64);
        Ok(())
    }
}
