//! TCP socket counts of this namespace from `/proc/net/sockstat` and `sockstat6`, with
//! the TIME_WAIT limit `tcp_max_tw_buckets` (from the namespace's settings).
//!
//! In another namespace, while the node pass serves TIME_WAIT counts
//! ([`crate::source::pass`]), the TIME_WAIT gauge comes from the pass every sample and
//! the files are read at the counter cadence (`--netns.interval`) for the in-use and
//! orphan counts: reading both files in every pod each second was a fifth of the
//! exporter's CPU at 250 pods (`perf`, docs/benchmarks.md).

use std::sync::Arc;

use crate::config::Config;
use crate::metrics;
use crate::procfs::net::{parse_sockstat, SockStat};
use crate::procfs::ProcFile;
use crate::snapshot::Snapshot;
use crate::source::settings::Sysctl;
use crate::source::{Every, NsContext, Source, SourceError};

pub struct Sockstat {
    v4: ProcFile,
    v6: ProcFile,
    ctx: Arc<NsContext>,
    /// When the files are read while the pass gives TIME_WAIT (another namespace).
    files_every: Every,
    /// The files' last reading.
    last: SockStat,
}

impl Sockstat {
    pub fn new(cfg: &Config, ctx: &Arc<NsContext>) -> Self {
        Self {
            // Both single_open files (proc_create_net_single): produced whole.
            v4: ProcFile::whole(cfg.roots.proc_net("sockstat")),
            v6: ProcFile::whole(cfg.roots.proc_net("sockstat6")),
            ctx: Arc::clone(ctx),
            files_every: Every::new(crate::cadence::Cadences::new(cfg).counters(ctx.scope)),
            last: SockStat::default(),
        }
    }

    /// This namespace's TIME_WAIT sockets from the node pass (another namespace's, when
    /// the pass serves them).
    fn time_wait_from_pass(&self) -> Option<u64> {
        let (rec, _) = self.ctx.from_pass(crate::source::pass::Field::TimeWait)?;
        Some(u64::from(rec.time_wait))
    }

    fn read_files(&mut self) -> Result<SockStat, SourceError> {
        let mut st = SockStat::default();
        self.v4.read_with(|b| parse_sockstat(b, &mut st))?;
        // sockstat6 is absent on a kernel without IPv6.
        match self.v6.read_with(|b| parse_sockstat(b, &mut st)) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(st)
    }
}

impl Source for Sockstat {
    fn name(&self) -> &'static str {
        "sockstat"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let from_pass = self.time_wait_from_pass();
        if from_pass.is_none() || self.files_every.due(std::time::Instant::now()) {
            match self.read_files() {
                Ok(st) => self.last = st,
                Err(e) => {
                    self.files_every.reset();
                    return Err(e);
                }
            }
        }
        let mut st = self.last;
        if let Some(tw) = from_pass {
            st.tcp_tw = Some(tw);
        }
        if let (Some(v4), Some(tw)) = (st.tcp_inuse, st.tcp_tw) {
            self.ctx.set_tcp_sockets(v4 + st.tcp6_inuse.unwrap_or(0) + tw);
        }
        if let Some(tw) = st.tcp_tw {
            out.push(&metrics::TCP_TW_SOCKETS, &[], tw as f64);
        }
        if let Some(v4) = st.tcp_inuse {
            out.push(&metrics::TCP_INUSE, &[], (v4 + st.tcp6_inuse.unwrap_or(0)) as f64);
        }
        if let Some(o) = st.tcp_orphan {
            out.push(&metrics::TCP_ORPHAN, &[], o as f64);
        }
        if let Some(limit) = self.ctx.settings().get(Sysctl::TcpMaxTwBuckets) {
            out.push(&metrics::TCP_TW_LIMIT, &[], limit as f64);
        }
        Ok(())
    }
}
