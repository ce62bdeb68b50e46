//! The per-namespace tuning values that bound the pressures this exporter measures,
//! served as one family `netpressure_sysctl{name}` in every sampled namespace: a pod
//! can have its own `somaxconn` or port range (pod-level sysctls). The values are the
//! namespace's settings (`settings.rs`), read every scan on the slow lane; this source
//! only serves them. The node-wide `netdev_max_backlog` is served once, by softnet
//! (`netpressure_softnet_backlog_limit`), and the conntrack hash size and timeouts by
//! conntrack.

use std::sync::Arc;

use crate::config::Config;
use crate::metrics;
use crate::snapshot::Snapshot;
use crate::source::settings::Sysctl as Setting;
use crate::source::{NsContext, Source, SourceError};

pub struct Sysctl {
    ctx: Arc<NsContext>,
    /// Another namespace than the exporter's own: the values that have families of
    /// their own (tcp_max_syn_backlog, tcp_max_tw_buckets, the port range) are not
    /// served twice per pod.
    other_namespace: bool,
}

impl Sysctl {
    pub fn new(_: &Config, ctx: &Arc<NsContext>) -> Self {
        Self {
            ctx: Arc::clone(ctx),
            other_namespace: ctx.scope == crate::cadence::Scope::Other,
        }
    }
}

impl Source for Sysctl {
    fn name(&self) -> &'static str {
        "sysctl"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        if let Some(e) = crate::sync::lock(&self.ctx.from_slow.settings_error).clone() {
            return Err(SourceError::Settings(e));
        }
        let settings = self.ctx.settings();
        if !settings.read {
            return Err(SourceError::NotYetRead("the sysctls"));
        }
        for s in Setting::ALL {
            if self.other_namespace && matches!(s, Setting::TcpMaxSynBacklog | Setting::TcpMaxTwBuckets) {
                continue;
            }
            if let (Some(name), Some(v)) = (s.served_name(), settings.get(s)) {
                out.push(&metrics::SYSCTL, &[("name", name)], v as f64);
            }
        }
        if let Some((lo, hi)) = settings.port_range.filter(|_| !self.other_namespace) {
            out.push(
                &metrics::SYSCTL,
                &[("name", "net.ipv4.ip_local_port_range.start")],
                f64::from(lo),
            );
            out.push(
                &metrics::SYSCTL,
                &[("name", "net.ipv4.ip_local_port_range.end")],
                f64::from(hi),
            );
        }
        Ok(())
    }
}
