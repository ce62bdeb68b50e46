//! The per-namespace tuning values that bound the pressures this exporter measures,
//! re-read every `--scan.interval` (the sampler's scan cadence: they change rarely,
//! though kube-proxy and operators do change them) and served as one family
//! `netpressure_sysctl{name}` in every sampled namespace: a pod can have its own
//! `somaxconn` or port range (pod-level sysctls). `/proc/sys/net` follows the network
//! namespace of the thread that opens the file, so each namespace's instance reads its
//! own. The node-wide `netdev_max_backlog` is served once, by softnet
//! (`netpressure_softnet_backlog_limit`). A sysctl this kernel lacks is not served;
//! none at all means the procfs root is wrong, and the source is down.

use crate::config::Config;
use crate::metrics;
use crate::procfs::net::parse_port_range;
use crate::procfs::{ProcError, ProcFile};
use crate::snapshot::Snapshot;
use crate::source::{Source, SourceError};

/// (sysctl name, path under /proc/sys).
const SINGLE: &[(&str, &str)] = &[
    ("net.core.somaxconn", "sys/net/core/somaxconn"),
    ("net.ipv4.tcp_max_syn_backlog", "sys/net/ipv4/tcp_max_syn_backlog"),
    ("net.ipv4.tcp_syncookies", "sys/net/ipv4/tcp_syncookies"),
    ("net.ipv4.tcp_max_tw_buckets", "sys/net/ipv4/tcp_max_tw_buckets"),
    ("net.ipv4.tcp_tw_reuse", "sys/net/ipv4/tcp_tw_reuse"),
    ("net.ipv4.tcp_timestamps", "sys/net/ipv4/tcp_timestamps"),
];

pub struct Sysctl {
    files: Vec<(&'static str, ProcFile)>,
    port_range: ProcFile,
}

impl Sysctl {
    pub fn new(cfg: &Config) -> Self {
        Self {
            files: SINGLE
                .iter()
                .map(|(name, rel)| (*name, ProcFile::new(cfg.roots.proc(rel))))
                .collect(),
            port_range: ProcFile::new(cfg.roots.proc("sys/net/ipv4/ip_local_port_range")),
        }
    }
}

impl Source for Sysctl {
    fn name(&self) -> &'static str {
        "sysctl"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        let mut served = 0;
        for (name, file) in &mut self.files {
            if let Some(v) = file.read_u64_opt()? {
                out.push(&metrics::SYSCTL, &[("name", name)], v as f64);
                served += 1;
            }
        }
        if served == 0 {
            if let Some((_, file)) = self.files.first() {
                return Err(ProcError::NotFound(file.path().to_path_buf()).into());
            }
        }
        match self.port_range.read() {
            Ok(bytes) => {
                let (lo, hi) = parse_port_range(bytes)
                    .ok_or_else(|| ProcError::parse(self.port_range.path(), "expected two ports, low then high"))?;
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
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}
