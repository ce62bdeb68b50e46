//! The floor under any sampler on this machine: a thread that does nothing but wake on the
//! sampler's clock (`park_timeout` towards the next tick, as the sampler sleeps) and go
//! back to sleep. `scripts/bench-vs-node-exporter.sh` runs it beside both exporters in the
//! same window, so that the CPU one wake-up costs here is measured, not assumed: on the
//! 2-vCPU benchmark VM it was about 55 µs a wake-up (0.022 % of a core at 4 a second),
//! which is most of what node_exporter costs in total when scraped every 15 s.
//!
//! Usage: wake_floor [INTERVAL_MS=250]

use std::time::{Duration, Instant};

fn main() {
    let ms: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(250);
    let interval = Duration::from_millis(ms.max(1));
    let mut next = Instant::now();
    loop {
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::park_timeout(next - now);
        }
    }
}
