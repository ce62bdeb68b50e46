//! How often each periodic thing runs, in one place: the periods the flags set, derived
//! once into [`Cadences`], and the sampler's fixed ones (the slow lane's tick, retries,
//! wake-ups). A source says only which kind of cadence it runs on ([`Cadence`],
//! [`SlowCadence`]); the lanes turn kinds into ticks here.

use std::time::Duration;

use crate::config::Config;

/// The slow lane's tick: its cadences (`--scan.interval`, `--netns.interval`,
/// `--netns.scan-interval`) are whole seconds.
pub const SLOW_TICK: Duration = Duration::from_secs(1);

/// The most ticks the slow lane sleeps through when nothing is due (it wakes earlier
/// when due work or evidence asks).
pub const SLOW_MAX_SLEEP: u64 = 10;

/// How long a source the kernel lacks is left alone before it is tried again (a module
/// such as nf_conntrack may be loaded later).
pub const ABSENT_RETRY: Duration = Duration::from_secs(10);

/// How often a breakdown's unknown source may bring discovery and the owners' refresh
/// forward.
pub const OWNERS_ASKED: Duration = Duration::from_secs(2);

/// How long the first published snapshot waits for the slow lane's first round.
pub const FIRST_ROUND_WAIT: Duration = Duration::from_secs(5);

/// How often the drop-reason map is read (at most; every namespace's instance serves
/// the last read).
pub const DROP_MAP_READ: Duration = Duration::from_secs(1);

/// How often the fast lane runs a source's fast part. Between runs it serves the
/// source's last output, so a scrape always sees every source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// Every `--sample.interval` (other namespaces: `--netns.sample-interval`): sources
    /// with pressure gauges and their peaks.
    Sample,
    /// Every `--sample.counter-interval` (other namespaces: `--netns.interval`): sources
    /// that serve only counters and slow-moving values. A counter loses nothing between
    /// reads (it is cumulative) and Prometheus takes its rate over minutes, so reading it
    /// every 250 ms would only cost: `/proc/net/netstat` and `snmp` alone are about
    /// 60 µs a read, formatted by the kernel field by field.
    Counter,
}

/// How often the slow lane runs a source's slow part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowCadence {
    /// Every `--scan.interval` (other namespaces: `--netns.scan-interval`).
    Scan,
    /// When the source's evidence asks for it (`Source::want`), checked every round of
    /// the slow lane: the conntrack breakdown, which watches the table's fill.
    Evidence,
}

/// Whose namespace a source samples: the exporter's own (node-wide sources run only
/// there), or another it tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    Own,
    Other,
}

/// The periods the flags set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cadences {
    /// `--sample.interval`: the fast lane's tick.
    pub sample: Duration,
    /// `--sample.counter-interval`.
    pub counters: Duration,
    /// `--scan.interval`.
    pub scans: Duration,
    /// `--netns.sample-interval`.
    pub other_samples: Duration,
    /// `--netns.interval`: the other namespaces' counters, and discovery.
    pub other_counters: Duration,
    /// `--netns.scan-interval`.
    pub other_scans: Duration,
}

/// How many ticks of `tick` make up `interval` (at least one).
pub fn ticks_for(interval: Duration, tick: Duration) -> u64 {
    let n = interval.as_nanos().div_ceil(tick.as_nanos().max(1));
    u64::try_from(n).unwrap_or(u64::MAX).max(1)
}

impl Cadences {
    pub fn new(cfg: &Config) -> Self {
        Self {
            sample: cfg.sample_interval,
            counters: cfg.counter_interval,
            scans: cfg.scan_interval,
            other_samples: cfg.netns_sample_interval,
            other_counters: cfg.netns_interval,
            other_scans: cfg.netns_scan_interval,
        }
    }

    /// How often counters are read in a namespace of `scope`.
    pub fn counters(&self, scope: Scope) -> Duration {
        match scope {
            Scope::Own => self.counters,
            Scope::Other => self.other_counters,
        }
    }

    /// How often the scans (and sysctls) run in a namespace of `scope`.
    pub fn scans(&self, scope: Scope) -> Duration {
        match scope {
            Scope::Own => self.scans,
            Scope::Other => self.other_scans,
        }
    }

    /// A fast part's period in fast-lane ticks.
    pub fn fast_ticks(&self, cadence: Cadence, scope: Scope) -> u64 {
        match (cadence, scope) {
            (Cadence::Sample, Scope::Own) => 1,
            (Cadence::Sample, Scope::Other) => ticks_for(self.other_samples, self.sample),
            (Cadence::Counter, scope) => ticks_for(self.counters(scope), self.sample),
        }
    }

    /// A slow part's period in slow-lane ticks (`u64::MAX`: only when its evidence asks).
    pub fn slow_ticks(&self, cadence: SlowCadence, scope: Scope) -> u64 {
        match cadence {
            SlowCadence::Scan => ticks_for(self.scans(scope), SLOW_TICK),
            SlowCadence::Evidence => u64::MAX,
        }
    }

    /// Discovery's period in slow-lane ticks.
    pub fn discovery_ticks(&self) -> u64 {
        ticks_for(self.other_counters, SLOW_TICK)
    }

    /// How old a read of the drop-reason map may be and still serve: every namespace
    /// due within [`DROP_MAP_READ`] shares one read, whichever tick of it each falls on.
    pub fn drop_map_max_age(&self) -> Duration {
        DROP_MAP_READ.saturating_sub(self.sample / 2)
    }

    /// Each period by the flag that sets it.
    pub fn by_flag(&self) -> [(&'static str, Duration); 6] {
        [
            ("--sample.interval", self.sample),
            ("--sample.counter-interval", self.counters),
            ("--scan.interval", self.scans),
            ("--netns.sample-interval", self.other_samples),
            ("--netns.interval", self.other_counters),
            ("--netns.scan-interval", self.other_scans),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_flag_table_gives_the_default_periods() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let defaults = Cadences::new(&Config::default());
        for (flag, period) in defaults.by_flag() {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{flag}` |")))
                .unwrap_or_else(|| panic!("README's flag table has no row for {flag}"));
            let default = row.split('|').nth(2).unwrap().trim().trim_matches('`');
            let parsed = crate::config::parse_duration(default).unwrap();
            assert_eq!(parsed, period, "{flag}: README says {default}");
        }
        // And the command line's defaults are the same Config::default.
        let parsed = Config::from_args(["netpressure_exporter"]).unwrap();
        assert_eq!(Cadences::new(&parsed), defaults);
    }

    #[test]
    fn kinds_become_ticks_by_scope() {
        let c = Cadences::new(&Config::default());
        // 250 ms ticks: gauges every tick, counters every 5 s; other namespaces' gauges
        // every second, their counters every 10 s.
        assert_eq!(c.fast_ticks(Cadence::Sample, Scope::Own), 1);
        assert_eq!(c.fast_ticks(Cadence::Counter, Scope::Own), 20);
        assert_eq!(c.fast_ticks(Cadence::Sample, Scope::Other), 4);
        assert_eq!(c.fast_ticks(Cadence::Counter, Scope::Other), 40);
        // 1 s slow ticks: scans every 5 s here, every 5 min elsewhere; discovery 10 s.
        assert_eq!(c.slow_ticks(SlowCadence::Scan, Scope::Own), 5);
        assert_eq!(c.slow_ticks(SlowCadence::Scan, Scope::Other), 300);
        assert_eq!(c.slow_ticks(SlowCadence::Evidence, Scope::Own), u64::MAX);
        assert_eq!(c.discovery_ticks(), 10);
        assert_eq!(c.drop_map_max_age(), Duration::from_millis(875));
    }
}
