//! Conntrack against the real kernel, each test in a network namespace it creates.
//!
//! Tests that lower the global `nf_conntrack_max` hold `ConntrackMaxGuard`, which
//! serialises them and restores the old value even when they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{metric, scrape_until, ConntrackMaxGuard, Exporter, Flows, Netns};

const MAX: u64 = 64;

/// Fills the namespace's table: more flows than the (lowered) global max.
fn fill(ns: &Netns) -> Flows {
    let flows = Flows::open(ns, 8080, MAX as usize + 16, Duration::from_millis(200));
    assert_eq!(ns.conntrack_count(), MAX, "the table should be full");
    assert!(flows.failed > 0, "some connections should have been dropped");
    flows
}

#[test]
fn table_full_shows_entries_at_limit_and_drops() {
    let _max = ConntrackMaxGuard::set(MAX);
    let ns = Netns::with_conntrack("full");
    let exp = Exporter::start(&ns, &[]);
    let _flows = fill(&ns);

    let body = scrape_until(&exp, "entries at the limit", |b| {
        metric(b, "netpressure_conntrack_entries", &ns.label("")) == Some(MAX as f64)
    });
    assert_eq!(
        metric(&body, "netpressure_conntrack_entries_limit", &ns.label("")),
        Some(MAX as f64)
    );
    // Counters are read every --sample.counter-interval (5 s), not every sample.
    let body = scrape_until(&exp, "the dropped SYNs counted", |b| {
        metric(b, "netpressure_conntrack_drop_total", &ns.label("")).is_some_and(|n| n > 0.0)
    });
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="conntrack""#),
        Some(1.0)
    );
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="conntrack_netlink""#),
        Some(1.0)
    );
}

#[test]
fn peak_holds_the_full_value_after_the_table_is_flushed() {
    let _max = ConntrackMaxGuard::set(MAX);
    let ns = Netns::with_conntrack("peak");
    let exp = Exporter::start(&ns, &[]);
    let mut flows = fill(&ns);
    scrape_until(&exp, "entries at the limit", |b| {
        metric(b, "netpressure_conntrack_entries", &ns.label("")) == Some(MAX as f64)
    });

    flows.close();
    ns.sh("conntrack -F");
    let body = scrape_until(&exp, "entries to fall", |b| {
        metric(b, "netpressure_conntrack_entries", &ns.label("")).is_some_and(|v| v < 10.0)
    });
    assert_eq!(
        metric(&body, "netpressure_conntrack_entries_peak", &ns.label("")),
        Some(MAX as f64)
    );
}

#[test]
fn per_cpu_counters_carry_a_cpu_label_and_sum_to_the_total() {
    let _max = ConntrackMaxGuard::set(MAX);
    let ns = Netns::with_conntrack("percpu");
    let exp = Exporter::start(&ns, &["--collector.conntrack.per-cpu"]);
    let _flows = fill(&ns);
    let per_cpu_prefix = format!("netpressure_conntrack_drop_total{{{},cpu=", ns.label(""));
    let per_cpu = |b: &str| -> f64 {
        b.lines()
            .filter(|l| l.starts_with(&per_cpu_prefix))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum()
    };
    // Counters are read every --sample.counter-interval (5 s), not every sample.
    let body = scrape_until(&exp, "per-CPU drops", |b| per_cpu(b) > 0.0);
    assert_eq!(
        metric(&body, "netpressure_conntrack_drop_total", &ns.label("")),
        None,
        "no summed series beside per-CPU ones"
    );
}

#[test]
fn without_cap_net_admin_procfs_serves_and_the_netlink_path_reports_down() {
    let ns = Netns::with_conntrack("nocap");
    let _flows = Flows::open(&ns, 8080, 5, Duration::from_secs(2));
    assert!(ns.conntrack_count() >= 5);
    let exp = Exporter::start_with(&ns, Some("cap_net_admin"), &[]);
    // The kernel's count when the exporter agrees with it, not one taken earlier.
    let mut expected = 0;
    let body = scrape_until(&exp, "the kernel's entry count", |b| {
        expected = ns.conntrack_count();
        metric(b, "netpressure_conntrack_entries", &ns.label("")) == Some(expected as f64)
    });
    let limit: f64 = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        metric(&body, "netpressure_conntrack_entries", &ns.label("")),
        Some(expected as f64)
    );
    assert_eq!(
        metric(&body, "netpressure_conntrack_entries_limit", &ns.label("")),
        Some(limit)
    );
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="conntrack""#),
        Some(1.0)
    );
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="conntrack_netlink""#),
        Some(0.0)
    );
    assert!(
        metric(
            &body,
            "netpressure_source_errors_total",
            r#"source="conntrack_netlink""#
        )
        .unwrap()
            >= 1.0
    );
    // This kernel still builds /proc/net/stat/nf_conntrack, so counters are served too.
    assert!(metric(&body, "netpressure_conntrack_drop_total", &ns.label("")).is_some());

    let (_, log) = exp.stop();
    let warnings = log.lines().filter(|l| l.contains("conntrack_netlink is down")).count();
    assert_eq!(warnings, 1, "the refusal is logged once, not every tick:\n{log}");
    assert!(log.contains("Operation not permitted"), "{log}");
}

#[test]
fn missing_conntrack_reports_the_source_down_and_the_rest_keeps_serving() {
    // No CAP_NET_ADMIN and no /proc/sys/net/netfilter (an empty tmpfs over it, in the
    // mount namespace `ip netns exec` makes): as on a kernel without conntrack, the
    // source is down, logs once at debug, and counts no error. A kernel really without
    // it is tests/vm/old-kernel.sh's first boot.
    let ns = Netns::new("absent");
    let mut cmd = ns.cmd("sh");
    cmd.args([
        "-c",
        &format!(
            "mount -t tmpfs none /proc/sys/net/netfilter && exec capsh --drop=cap_net_admin -- -c \
             'exec {} --web.listen-address=127.0.0.1:{} --sample.interval=100ms --log.level=debug --no-collector.netns'",
            common::EXPORTER,
            common::PORT
        ),
    ]);
    let exp = Exporter::start_cmd(&mut cmd);
    // An absent source is retried every 10 s; a few samples of the others show that the
    // sampler went on around it.
    let samples = |b: &str, s: &str| metric(b, "netpressure_samples_total", &format!(r#"source="{s}""#)).unwrap_or(0.0);
    let body = scrape_until(&exp, "samples around the absent source", |b| {
        samples(b, "conntrack") >= 1.0 && samples(b, "sockstat") >= 3.0
    });
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="conntrack""#),
        Some(0.0)
    );
    assert_eq!(
        metric(&body, "netpressure_source_errors_total", r#"source="conntrack""#),
        Some(0.0)
    );
    assert_eq!(metric(&body, "netpressure_source_up", r#"source="process""#), Some(1.0));
    assert_eq!(
        metric(&body, "netpressure_source_up", r#"source="sockstat""#),
        Some(1.0)
    );
    assert_eq!(metric(&body, "netpressure_conntrack_entries", &ns.label("")), None);
    let (_, log) = exp.stop();
    let lines: Vec<_> = log.lines().filter(|l| l.contains("source conntrack is down")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("level=debug"), "{log}");
}

/// The breakdown's table dump against the real kernel: complete, it sees what
/// `nf_conntrack_count` says; with its deadline already passed it stops after the
/// first datagram, and says it was cut.
#[test]
fn a_table_dump_sees_every_entry_or_says_it_was_cut() {
    use netpressure_exporter::netlink::ctnetlink::{CtDump, DumpEnd};
    use std::time::Instant;
    let ns = Netns::with_conntrack("ctdump");
    // 240 entries: about 50 KB of dump, more than one datagram. 120 a listener (its
    // accept queue of 128 holds them without accepting).
    let _a = Flows::open(&ns, 8080, 120, Duration::from_secs(2));
    let _b = Flows::open(&ns, 8081, 120, Duration::from_secs(2));
    assert_eq!(ns.conntrack_count(), 240);
    let (complete, cut) = ns.enter(|| {
        let mut seen = 0u64;
        let end = CtDump::open()
            .unwrap()
            .run(Instant::now() + Duration::from_secs(30), |_| seen += 1)
            .unwrap();
        let mut partial = 0u64;
        let cut = CtDump::open().unwrap().run(Instant::now(), |_| partial += 1).unwrap();
        ((end, seen), (cut, partial))
    });
    assert_eq!(complete, (DumpEnd::Complete, ns.conntrack_count()));
    assert_eq!(cut.0, DumpEnd::Cut);
    assert!(cut.1 < complete.1, "{} of {} seen before the cut", cut.1, complete.1);
}

#[test]
fn protocols_without_a_name_are_told_apart_by_their_number() {
    // IPIP, ESP and IPv6-in-IPv4 to one peer: three destinations, which a label of
    // "other" for each would have served as three series with one label set.
    let ns = Netns::with_conntrack("ctproto");
    ns.sh("for p in 4 50 41; do conntrack -I -s 10.9.0.1 -d 10.9.0.2 -p $p -t 300 >/dev/null 2>&1; done");
    assert_eq!(ns.conntrack_count(), 3);
    let exp = Exporter::start(
        &ns,
        &[
            "--no-collector.netns",
            "--collector.conntrack.breakdown-threshold=0",
            "--collector.conntrack.breakdown-interval=1s",
        ],
    );
    let series = |b: &str| -> Vec<String> {
        b.lines()
            .filter(|l| {
                l.starts_with("netpressure_conntrack_top_destination_entries{")
                    && l.contains(r#"destination_address="10.9.0.2""#)
            })
            .map(str::to_string)
            .collect()
    };
    // Every scrape passes the strict exposition check (unique series among others).
    let body = scrape_until(&exp, "the three destinations", |b| series(b).len() >= 3);
    let found = series(&body);
    for p in ["4", "50", "41"] {
        assert!(
            found.iter().any(|l| l.contains(&format!(r#"protocol="{p}""#))),
            "{p}: {found:?}"
        );
    }
    assert_eq!(found.len(), 3, "{found:?}");
}
