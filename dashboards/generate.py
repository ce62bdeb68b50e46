#!/usr/bin/env python3
"""Generates the Grafana dashboards (fleet.json, node.json, pod.json) from the panel
lists below, so that every panel follows the same conventions: a `datasource`
variable, multi-value `job`/`instance`/`namespace`/`pod` variables matched with `=~`,
`$__rate_interval`, a unit and a description on every panel, counters only inside
rate()/increase(), stable uids, and no `__inputs` (file provisioning works).
`--check` fails when the committed files differ from what this writes.
"""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SEL = 'job=~"$job", instance=~"$instance"'
NS = 'job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"'


def var_query(name, query, label, all_value=".+"):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def variables():
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
        },
        var_query("job", "label_values(netpressure_build_info, job)", "Job"),
        var_query("instance", 'label_values(netpressure_build_info{job=~"$job"}, instance)', "Instance"),
        # Series of namespaces outside any pod have no namespace/pod labels: "All" must
        # match them too, hence .* rather than .+.
        var_query(
            "namespace",
            'label_values(netpressure_conntrack_entries{job=~"$job", instance=~"$instance"}, namespace)',
            "Namespace",
            ".*",
        ),
        var_query(
            "pod",
            'label_values(netpressure_conntrack_entries{job=~"$job", instance=~"$instance", namespace=~"$namespace"}, pod)',
            "Pod",
            ".*",
        ),
    ]


def panel(pid, title, description, unit, targets, kind="timeseries", w=12, h=8, x=0, y=0):
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
                **({"format": "table", "instant": True} if kind == "table" else {"range": True}),
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if kind == "table":
        p["options"] = {"showHeader": True}
    return p


def layout(panels):
    out, x, y = [], 0, 0
    for i, (title, desc, unit, targets, *rest) in enumerate(panels, start=1):
        kind = rest[0] if rest else "timeseries"
        w = 24 if kind == "table" else 12
        if x + w > 24:
            x, y = 0, y + 8
        out.append(panel(i, title, desc, unit, targets, kind, w=w, x=x, y=y))
        x += w
        if x >= 24:
            x, y = 0, y + 8
    return out


def dashboard(uid, title, description, panels):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["netpressure", "conntrack", "network"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables()},
        "annotations": {"list": []},
        "links": [],
        "panels": layout(panels),
    }


FLEET = [
    ("Nodes closest to a full conntrack table",
     "Peak conntrack entries over nf_conntrack_max, worst namespace per node (top 10). At 100 % new connections are dropped.",
     "percentunit",
     [(f'topk(10, max by (instance) (netpressure_conntrack_entries_peak{{{NS}}} / (netpressure_conntrack_entries_limit{{{NS}}} > 0)))', "{{instance}}")]),
    ("Conntrack drops by node",
     "Packets dropped because a conntrack table was full, per second.",
     "pps",
     [(f'sum by (instance) (rate(netpressure_conntrack_drop_total{{{NS}}}[$__rate_interval]))', "{{instance}}")]),
    ("Drops by reason across the fleet",
     "Packets the kernel dropped, per second, by its own drop reason (enum skb_drop_reason, counted in the kernel by the drop_reasons collector): the 10 largest node and reason pairs. netfilter_drop: a full conntrack table (with conntrack drops) or a DROP rule; tcp_listen_overflow: a full accept queue; cpu_backlog: netdev_max_backlog; no_socket: nothing listening (or a syncookie ACK past a full accept queue).",
     "pps",
     [(f'topk(10, sum by (instance, reason) (rate(netpressure_packet_drops_total{{{NS}}}[$__rate_interval])))', "{{instance}} {{reason}}")]),
    ("Listen overflows by node",
     "Connections dropped because a listener's accept queue was full, per second.",
     "cps",
     [(f'sum by (instance) (rate(netpressure_tcp_listen_overflows_total{{{NS}}}[$__rate_interval]))', "{{instance}}")]),
    ("Conntrack insert failures by node",
     "Failed conntrack insertions per second (the race behind 5 s DNS delays).",
     "pps",
     [(f'sum by (instance) (rate(netpressure_conntrack_insert_failed_total{{{NS}}}[$__rate_interval]))', "{{instance}}")]),
    ("Pods with the fullest conntrack tables",
     "Top 10 namespaces by peak conntrack entries over the limit, with their pod when they belong to one.",
     "percentunit",
     [(f'topk(10, netpressure_conntrack_entries_peak{{{NS}}} / (netpressure_conntrack_entries_limit{{{NS}}} > 0))', "")],
     "table"),
    ("Who fills conntrack tables across the fleet",
     "The largest sources in the breakdowns of tables over the threshold, on every node: a pod (source_namespace/source_pod) opening flows on many nodes shows here first.",
     "short",
     [(f'topk(10, sum by (instance, netns, source_address, source_namespace, source_pod) (netpressure_conntrack_top_source_entries{{{NS}, source_address!="other"}}))', "")],
     "table"),
    ("Nodes closest to their file descriptor limit",
     "System file handles over fs.file-max (peak), per node.",
     "percentunit",
     [(f'topk(10, netpressure_fd_allocated_peak{{{SEL}}} / (netpressure_fd_limit{{{SEL}}} > 0))', "{{instance}}")]),
    ("Softnet drops by node",
     "Packets dropped at netdev_max_backlog, per second.",
     "pps",
     [(f'sum by (instance) (rate(netpressure_softnet_dropped_total{{{SEL}}}[$__rate_interval]))', "{{instance}}")]),
]

NODE = [
    ("Conntrack entries, peak and limit",
     "Entries per namespace, their peak over the exporter's window (spikes between scrapes), and nf_conntrack_max.",
     "short",
     [(f'netpressure_conntrack_entries{{{NS}}}', "{{netns}} {{pod}} entries"),
      (f'netpressure_conntrack_entries_peak{{{NS}}}', "{{netns}} {{pod}} peak"),
      (f'max by (instance) (netpressure_conntrack_entries_limit{{{NS}}})', "limit")]),
    ("Conntrack drops, early drops and insert failures",
     "Per second, summed over CPUs.",
     "pps",
     [(f'sum by (netns, pod) (rate(netpressure_conntrack_drop_total{{{NS}}}[$__rate_interval]))', "{{netns}} {{pod}} drop"),
      (f'sum by (netns, pod) (rate(netpressure_conntrack_early_drop_total{{{NS}}}[$__rate_interval]))', "{{netns}} {{pod}} early drop"),
      (f'sum by (netns, pod) (rate(netpressure_conntrack_insert_failed_total{{{NS}}}[$__rate_interval]))', "{{netns}} {{pod}} insert failed")]),
    ("Drops by reason",
     "Packets the kernel dropped, per second, per namespace and drop reason (enum skb_drop_reason, counted in the kernel by the drop_reasons collector). netfilter_drop: a full conntrack table (with conntrack drops) or a DROP rule; tcp_listen_overflow: a full accept queue; cpu_backlog: netdev_max_backlog; no_socket: nothing listening (or a syncookie ACK past a full accept queue). Reasons that never dropped have no series."
     ,
     "pps",
     [(f'sum by (netns, pod, reason) (rate(netpressure_packet_drops_total{{{NS}}}[$__rate_interval]))', "{{netns}} {{pod}} {{reason}}")]),
    ("Who fills the table: top sources",
     "From the breakdown the exporter takes of a table over --collector.conntrack.breakdown-threshold (75 % by default): entries by original source address, with the pod on the node that owns it (source_namespace, source_pod). Empty while every table is below the threshold.",
     "short",
     [(f'sort_desc(netpressure_conntrack_top_source_entries{{{NS}}})', "")],
     "table"),
    ("Who fills the table: top destinations",
     "Entries by original destination address, port and protocol (a Service IP, kube-dns on 53/udp, an external API), from the same breakdown.",
     "short",
     [(f'sort_desc(netpressure_conntrack_top_destination_entries{{{NS}}})', "")],
     "table"),
    ("Conntrack entries by state",
     "From the breakdown: TCP states, and for other protocols unreplied / replied / assured. Many unreplied entries: a flood or a dead upstream; time_wait: short connections; established: long-lived or leaked ones.",
     "short",
     [(f'netpressure_conntrack_breakdown_entries{{{NS}}}', "{{netns}} {{pod}} {{protocol}} {{state}}")]),
    ("Listeners: accept queue, peak and limit",
     "Every served listener: connections waiting for accept(), the peak over the window, the limit (backlog after somaxconn), and half-open connections.",
     "short",
     [(f'netpressure_tcp_listen_queue_length{{{NS}}}', ""),
      (f'netpressure_tcp_listen_queue_length_peak{{{NS}}}', ""),
      (f'netpressure_tcp_listen_queue_limit{{{NS}}}', ""),
      (f'netpressure_tcp_syn_recv_sockets{{{NS}}}', "")],
     "table"),
    ("Listen overflows and SYN queue drops",
     "Connections dropped at a full accept queue, and SYNs dropped at a full SYN queue, per second.",
     "cps",
     [(f'rate(netpressure_tcp_listen_overflows_total{{{NS}}}[$__rate_interval])', "{{netns}} {{pod}} overflows"),
      (f'rate(netpressure_tcp_syn_queue_drops_total{{{NS}}}[$__rate_interval])', "{{netns}} {{pod}} SYN drops")]),
    ("TIME_WAIT sockets, peak and limit",
     "TIME_WAIT sockets per namespace, their peak, and tcp_max_tw_buckets.",
     "short",
     [(f'netpressure_tcp_time_wait_sockets{{{NS}}}', "{{netns}} {{pod}}"),
      (f'netpressure_tcp_time_wait_sockets_peak{{{NS}}}', "{{netns}} {{pod}} peak"),
      (f'netpressure_tcp_time_wait_limit{{{NS}}}', "{{netns}} {{pod}} limit")]),
    ("Remotes by local-port pressure",
     "Share of the ephemeral port range held towards each destination (all states). At 100 % connect() fails with EADDRNOTAVAIL. Empty while no namespace holds 1/8 of its port range in TCP sockets: no destination can then hold more, and the scan is skipped.",
     "percentunit",
     [(f'topk(20, sum without (state) (netpressure_tcp_remote_sockets{{{NS}}}) / on (job, instance, netns) group_left () (netpressure_local_port_range_size{{{SEL}}} > 0))', "")],
     "table"),
    ("Top processes by file descriptors",
     "Open descriptors over RLIMIT_NOFILE for the processes nearest their limit.",
     "percentunit",
     [(f'netpressure_process_open_fds{{{SEL}}} / (netpressure_process_fd_limit{{{SEL}}} > 0)', "")],
     "table"),
    ("System file handles",
     "Allocated file handles, their peak, and fs.file-max.",
     "short",
     [(f'netpressure_fd_allocated{{{SEL}}}', "allocated"),
      (f'netpressure_fd_allocated_peak{{{SEL}}}', "peak"),
      (f'netpressure_fd_limit{{{SEL}}}', "file-max")]),
    ("Softnet drops and squeezes",
     "Input packets dropped at netdev_max_backlog, and net_rx_action budget exhaustion, per second.",
     "pps",
     [(f'rate(netpressure_softnet_dropped_total{{{SEL}}}[$__rate_interval])', "dropped"),
      (f'rate(netpressure_softnet_times_squeezed_total{{{SEL}}}[$__rate_interval])', "squeezed")]),
    ("Tuning values",
     "The sysctls that bound these pressures, as the exporter last read them.",
     "short",
     [(f'netpressure_sysctl{{{NS}}}', "")],
     "table"),
]

POD = [
    ("Conntrack entries against the limit",
     "The pod's namespace: entries, peak over the window, and nf_conntrack_max (global, checked per namespace).",
     "short",
     [(f'netpressure_conntrack_entries{{{NS}}}', "{{namespace}}/{{pod}} entries"),
      (f'netpressure_conntrack_entries_peak{{{NS}}}', "{{namespace}}/{{pod}} peak"),
      (f'netpressure_conntrack_entries_limit{{{NS}}}', "{{namespace}}/{{pod}} limit")]),
    ("Conntrack drops and insert failures",
     "Per second in the pod's namespace.",
     "pps",
     [(f'sum by (namespace, pod) (rate(netpressure_conntrack_drop_total{{{NS}}}[$__rate_interval]))', "{{namespace}}/{{pod}} drop"),
      (f'sum by (namespace, pod) (rate(netpressure_conntrack_insert_failed_total{{{NS}}}[$__rate_interval]))', "{{namespace}}/{{pod}} insert failed")]),
    ("Drops by reason",
     "Packets the kernel dropped in the pod's namespace, per second, by drop reason (counted in the kernel by the drop_reasons collector). netfilter_drop: a full conntrack table (with conntrack drops) or a DROP rule; tcp_listen_overflow: a full accept queue; cpu_backlog: netdev_max_backlog; no_socket: nothing listening (or a syncookie ACK past a full accept queue)."
     ,
     "pps",
     [(f'sum by (namespace, pod, reason) (rate(netpressure_packet_drops_total{{{NS}}}[$__rate_interval]))', "{{namespace}}/{{pod}} {{reason}}")]),
    ("Who fills the pod's table",
     "When the pod's own table is over the breakdown threshold: its top sources and destinations.",
     "short",
     [(f'sort_desc(netpressure_conntrack_top_source_entries{{{NS}}})', ""),
      (f'sort_desc(netpressure_conntrack_top_destination_entries{{{NS}}})', "")],
     "table"),
    ("Listeners of the pod",
     "Accept queue, peak and limit of each listener in the pod's namespace.",
     "short",
     [(f'netpressure_tcp_listen_queue_length_peak{{{NS}}}', ""),
      (f'netpressure_tcp_listen_queue_limit{{{NS}}}', "")],
     "table"),
    ("TCP connections opened and failed",
     "Active and passive opens and failed attempts per second.",
     "cps",
     [(f'rate(netpressure_tcp_active_opens_total{{{NS}}}[$__rate_interval])', "{{pod}} active"),
      (f'rate(netpressure_tcp_passive_opens_total{{{NS}}}[$__rate_interval])', "{{pod}} passive"),
      (f'rate(netpressure_tcp_attempt_fails_total{{{NS}}}[$__rate_interval])', "{{pod}} failed")]),
    ("TIME_WAIT sockets",
     "TIME_WAIT sockets in the pod's namespace and their peak.",
     "short",
     [(f'netpressure_tcp_time_wait_sockets{{{NS}}}', "{{pod}}"),
      (f'netpressure_tcp_time_wait_sockets_peak{{{NS}}}', "{{pod}} peak")]),
    ("Destinations by local-port pressure",
     "Sockets per destination holding an ephemeral port, by state. Empty while the pod holds fewer TCP sockets than 1/8 of its port range (the scan is skipped then).",
     "short",
     [(f'netpressure_tcp_remote_sockets{{{NS}}}', "")],
     "table"),
]

DASHBOARDS = {
    "fleet.json": dashboard("netpressure-fleet", "Netpressure / Fleet",
                            "Which nodes and pods are closest to dropping connections.", FLEET),
    "node.json": dashboard("netpressure-node", "Netpressure / Node",
                           "One node: conntrack, listeners, TIME_WAIT and ports, file descriptors, softnet.", NODE),
    "pod.json": dashboard("netpressure-pod", "Netpressure / Pod",
                          "One pod's network namespace: conntrack, listeners, connections, ports.", POD),
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, d in DASHBOARDS.items():
        text = json.dumps(d, indent=2) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if check:
        for n in stale:
            print(f"dashboards/{n} is out of date: run dashboards/generate.py", file=sys.stderr)
        print(f"generated dashboards: {len(DASHBOARDS) - len(stale)} passed, {len(stale)} failed")
        return 1 if stale else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
