//! Plain records decoded from the kernel, shared by the fetchers (`netlink/`, `procfs/`)
//! and the sources that turn them into metrics. No I/O and no kernel types here.

/// A conntrack statistic the kernel keeps per CPU (and per network namespace).
///
/// The order is the order of the exported families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtCounter {
    Found,
    Invalid,
    Insert,
    InsertFailed,
    Drop,
    EarlyDrop,
    Error,
    SearchRestart,
    ClashResolve,
    ChainTooLong,
}

impl CtCounter {
    pub const ALL: [CtCounter; 10] = [
        Self::Found,
        Self::Invalid,
        Self::Insert,
        Self::InsertFailed,
        Self::Drop,
        Self::EarlyDrop,
        Self::Error,
        Self::SearchRestart,
        Self::ClashResolve,
        Self::ChainTooLong,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The per-CPU conntrack counters of one CPU. `None` where the kernel did not report one
/// (older kernels lack CLASH_RESOLVE and CHAIN_TOOLONG).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCpuStats {
    pub cpu: u16,
    pub counters: [Option<u64>; CtCounter::COUNT],
}

impl CtCpuStats {
    pub fn get(&self, c: CtCounter) -> Option<u64> {
        self.counters[c.index()]
    }

    pub fn set(&mut self, c: CtCounter, v: u64) {
        self.counters[c.index()] = Some(v);
    }
}

/// The table-wide figures of `IPCTNL_MSG_CT_GET_STATS` (or their procfs equivalents).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtGlobalStats {
    /// Entries in the reading socket's network namespace.
    pub entries: Option<u64>,
    /// `nf_conntrack_max`, which is global: every namespace is checked against it.
    pub max_entries: Option<u64>,
}
