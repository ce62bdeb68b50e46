//! TCP counters of this namespace from `/proc/net/netstat` (TcpExt) and `/proc/net/snmp`
//! (Tcp), matched by field name. A field the kernel does not have is absent.

use crate::config::Config;
use crate::metrics::{self, Desc};
use crate::procfs::net::for_each_pair;
use crate::procfs::{ProcError, ProcFile};
use crate::snapshot::Snapshot;
use crate::source::{NsContext, Source, SourceError};
use std::sync::Arc;

/// (line prefix, field name, family), in the order served; no family: read as evidence
/// for the SYN_RECV scan, not served.
static FIELDS: &[(&[u8], &[u8], Option<&Desc>)] = &[
    (b"TcpExt", b"ListenOverflows", Some(&metrics::TCP_LISTEN_OVERFLOWS)),
    (b"TcpExt", b"ListenDrops", Some(&metrics::TCP_LISTEN_DROPS)),
    (b"TcpExt", b"TCPReqQFullDrop", Some(&metrics::TCP_SYN_QUEUE_DROPS)),
    (
        b"TcpExt",
        b"TCPReqQFullDoCookies",
        Some(&metrics::TCP_SYN_QUEUE_COOKIES),
    ),
    (b"TcpExt", b"SyncookiesSent", Some(&metrics::TCP_SYNCOOKIES_SENT)),
    (b"TcpExt", b"SyncookiesRecv", Some(&metrics::TCP_SYNCOOKIES_RECV)),
    (b"TcpExt", b"SyncookiesFailed", Some(&metrics::TCP_SYNCOOKIES_FAILED)),
    (b"TcpExt", b"TCPTimeWaitOverflow", Some(&metrics::TCP_TW_OVERFLOWS)),
    (b"TcpExt", b"TWRecycled", Some(&metrics::TCP_TW_REUSED)),
    (b"Tcp", b"ActiveOpens", Some(&metrics::TCP_ACTIVE_OPENS)),
    (b"Tcp", b"PassiveOpens", Some(&metrics::TCP_PASSIVE_OPENS)),
    (b"Tcp", b"AttemptFails", Some(&metrics::TCP_ATTEMPT_FAILS)),
    (b"Tcp", b"EstabResets", Some(&metrics::TCP_ESTAB_RESETS)),
    (b"Tcp", b"InSegs", None),
];

/// The index of `Tcp InSegs` in [`FIELDS`].
const IN_SEGS: usize = 13;

/// Looks up the wanted fields of one netstat/snmp body; `out[i]` is `FIELDS[i]`.
///
/// # Errors
/// A malformed body (a value line that does not match its header).
pub fn extract(bytes: &[u8], out: &mut [Option<u64>; FIELDS_LEN]) -> Result<(), &'static str> {
    for_each_pair(bytes, |prefix, name, value| {
        if let Some(i) = FIELDS.iter().position(|(p, n, _)| *p == prefix && *n == name) {
            out[i] = Some(value);
        }
    })
}

pub const FIELDS_LEN: usize = 14;

pub struct Netstat {
    netstat: ProcFile,
    snmp: ProcFile,
    values: [Option<u64>; FIELDS_LEN],
    ctx: Arc<NsContext>,
}

impl Netstat {
    pub fn new(cfg: &Config, ctx: &Arc<NsContext>) -> Self {
        Self {
            // Both single_open files (proc_create_net_single): produced whole.
            netstat: ProcFile::whole(cfg.roots.proc_net("netstat")),
            snmp: ProcFile::whole(cfg.roots.proc_net("snmp")),
            values: [None; FIELDS_LEN],
            ctx: Arc::clone(ctx),
        }
    }
}

impl Source for Netstat {
    fn name(&self) -> &'static str {
        "netstat"
    }

    fn sample(&mut self, out: &mut Snapshot) -> Result<(), SourceError> {
        self.values = [None; FIELDS_LEN];
        for file in [&mut self.netstat, &mut self.snmp] {
            // The path is copied for an error only: a steady-state tick allocates nothing.
            let values = &mut self.values;
            let parsed = file.read_with(|b| extract(b, values))?;
            parsed.map_err(|e| ProcError::parse(file.path(), e))?;
        }
        for ((_, _, desc), v) in FIELDS.iter().zip(self.values) {
            if let (Some(desc), Some(v)) = (desc, v) {
                out.push(desc, &[], v as f64);
            }
        }
        if let Some(n) = self.values[IN_SEGS] {
            self.ctx.set_tcp_in_segs(n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_length_agree() {
        assert_eq!(FIELDS.len(), FIELDS_LEN);
        assert_eq!(FIELDS[IN_SEGS].1, b"InSegs");
    }
}
