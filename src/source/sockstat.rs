//! TCP socket counts of this namespace from `/proc/net/sockstat` and `sockstat6`, with
//! the TIME_WAIT limit `tcp_max_tw_buckets` (from the namespace's settings).

use std::sync::Arc;

use crate::config::Config;
use crate::metrics;
use crate::procfs::net::{parse_sockstat, SockStat};
use crate::procfs::ProcFile;
use crate::snapshot::Snapshot;
use crate::source::settings::Sysctl;
use crate::source::{NsContext, Source, SourceError};

pub struct Sockstat {
    v4: ProcFile,
    v6: ProcFile,
    ctx: Arc<NsContext>,
}

impl Sockstat {
    pub fn new(cfg: &Config, ctx: &Arc<NsContext>) -> Self {
        Self {
            // Both single_open files (proc_create_net_single): produced whole.
            v4: ProcFile::whole(cfg.roots.proc_net("sockstat")),
            v6: ProcFile::whole(cfg.roots.proc_net("sockstat6")),
            ctx: Arc::clone(ctx),
        }
    }
}

impl Source for Sockstat {
    fn name(&self) -> &'static str {
        "sockstat"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let mut st = SockStat::default();
        self.v4.read_with(|b| parse_sockstat(b, &mut st))?;
        // sockstat6 is absent on a kernel without IPv6.
        match self.v6.read_with(|b| parse_sockstat(b, &mut st)) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
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
