//! 64-bit running totals of the kernel's 32-bit per-CPU counters.
//!
//! The per-CPU conntrack statistics (`struct ip_conntrack_stat`, `unsigned int` fields,
//! sent as be32 by ctnetlink and printed `%08x` in `/proc/net/stat/nf_conntrack`) and
//! the softnet_stat columns (`%08x`) wrap at 2^32 per CPU. Summing raw values makes the
//! node-wide total fall by about 2^32 whenever one CPU wraps, and fall again when a CPU
//! goes offline and its softnet row disappears; Prometheus reads either as a counter
//! reset and `rate()` spikes. Instead each CPU's counter is followed by its wrap-aware
//! delta (`new - old` modulo 2^32) and the deltas are added to a 64-bit total that never
//! goes down. A CPU that disappears keeps its total (its events happened), and when it
//! comes back its counter continues from the value it had, so nothing is counted twice.
//!
//! Pure bookkeeping: no I/O. One value per (CPU, counter); `None` where the kernel does
//! not report a counter (older kernels lack some).

/// CPUs beyond this index are ignored (the kernel's `NR_CPUS` limit is 8192), so a
/// corrupt CPU number cannot make the table grow without bound.
pub const MAX_CPUS: usize = 8192;

#[derive(Debug, Clone, Copy)]
struct Cell {
    last: u32,
    total: u64,
}

/// Running totals of `N` counters for every CPU seen.
#[derive(Debug)]
pub struct CpuTotals<const N: usize> {
    cpus: Vec<[Option<Cell>; N]>,
}

impl<const N: usize> Default for CpuTotals<N> {
    fn default() -> Self {
        Self { cpus: Vec::new() }
    }
}

impl<const N: usize> CpuTotals<N> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one reading of CPU `cpu`'s counters. The first reading of a counter is
    /// its total (the kernel has counted since boot); later ones add the wrap-aware
    /// difference. Values are taken modulo 2^32, as the kernel keeps them.
    pub fn observe(&mut self, cpu: usize, values: &[Option<u64>; N]) {
        if cpu >= MAX_CPUS {
            return;
        }
        if self.cpus.len() <= cpu {
            self.cpus.resize(cpu + 1, [None; N]);
        }
        let row = &mut self.cpus[cpu];
        for (cell, value) in row.iter_mut().zip(values) {
            let Some(v) = *value else { continue };
            // Truncation is the point: the kernel's counter is 32 bits wide.
            #[allow(clippy::cast_possible_truncation)]
            let raw = v as u32;
            *cell = Some(match *cell {
                None => Cell {
                    last: raw,
                    total: u64::from(raw),
                },
                Some(c) => Cell {
                    last: raw,
                    total: c.total.wrapping_add(u64::from(raw.wrapping_sub(c.last))),
                },
            });
        }
    }

    /// The running total of counter `i` on CPU `cpu`, if it was ever reported there.
    pub fn cpu_total(&self, cpu: usize, i: usize) -> Option<u64> {
        self.cpus.get(cpu)?.get(i).copied().flatten().map(|c| c.total)
    }

    /// The running total of counter `i` over every CPU ever seen, if any CPU reported it.
    pub fn total(&self, i: usize) -> Option<u64> {
        let mut sum = None;
        for row in &self.cpus {
            if let Some(Some(c)) = row.get(i) {
                sum = Some(sum.unwrap_or(0u64).wrapping_add(c.total));
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapping_cpu_keeps_the_total_rising() {
        let mut t = CpuTotals::<1>::new();
        t.observe(0, &[Some(0xffff_fff0)]);
        t.observe(1, &[Some(100)]);
        assert_eq!(t.total(0), Some(0xffff_fff0 + 100));
        // CPU 0 wraps: 0x20 more events past 2^32.
        t.observe(0, &[Some(0x10)]);
        t.observe(1, &[Some(101)]);
        assert_eq!(t.cpu_total(0, 0), Some(0x1_0000_0010));
        assert_eq!(t.total(0), Some(0x1_0000_0010 + 101));
        // A second wrap on the same CPU.
        t.observe(0, &[Some(0xffff_ffff)]);
        t.observe(0, &[Some(1)]);
        assert_eq!(t.cpu_total(0, 0), Some(0x2_0000_0001));
    }

    #[test]
    fn a_vanishing_cpu_row_does_not_lower_the_total() {
        let mut t = CpuTotals::<2>::new();
        t.observe(0, &[Some(10), Some(1)]);
        t.observe(1, &[Some(20), Some(2)]);
        assert_eq!(t.total(0), Some(30));
        // CPU 1 goes offline: its row is missing from the next readings.
        t.observe(0, &[Some(15), Some(1)]);
        assert_eq!(t.total(0), Some(35));
        assert_eq!(t.total(1), Some(3));
        // It comes back with the counter it kept: only the new events are added.
        t.observe(0, &[Some(15), Some(1)]);
        t.observe(1, &[Some(25), Some(2)]);
        assert_eq!(t.total(0), Some(40));
    }

    #[test]
    fn values_are_taken_modulo_2_32_and_absent_counters_stay_absent() {
        let mut t = CpuTotals::<2>::new();
        t.observe(0, &[Some(0x1_0000_0005), None]);
        assert_eq!(t.total(0), Some(5));
        assert_eq!(t.total(1), None);
        t.observe(MAX_CPUS, &[Some(1), Some(1)]);
        assert_eq!(t.total(1), None);
        assert_eq!(t.cpu_total(7, 0), None);
    }
}
