#!/usr/bin/env python3
"""Compares what the exporter served on a production-shaped node with the kernel's own tools.

Reads the results a guest of tests/vm/node-shape.sh wrote (or a host run of the same
shape): the scrape (`metrics`), the kernel's view read before and after it (`before/`,
`after/`: conntrack -C and ss per namespace, conntrack -S, softnet_stat, file-nr,
bpftool's dump of the drop map), the namespaces (`ns.pids`, `ns.binds`) and the shape's
manifest. Prints one PASS or FAIL line per check, a report of the costs, and exits 1 on
any failure.

A value that cannot move while it is compared (a static gauge) must equal the kernel's;
a counter must lie between the kernel's readings before and after the scrape; the
TIME_WAIT count, which only falls once the storm is over, between after and before.
"""

import argparse
import json
import os
import re
import sys
from collections import defaultdict

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
INIT_NET_INO = 0xEFFFFFF9


def parse_exposition(text):
    """The samples of a text exposition, checked strictly: every sample in a family that
    was declared (HELP and TYPE), families contiguous, no series twice."""
    errors, samples, declared, seen_families, series = [], [], {}, [], set()
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith('# HELP ') or line.startswith('# TYPE '):
            parts = line.split(' ', 3)
            name = parts[2]
            if line.startswith('# TYPE '):
                declared[name] = parts[3]
            if name != current:
                if name in seen_families:
                    errors.append(f'line {n}: family {name} is split')
                seen_families.append(name)
                current = name
            continue
        if line.startswith('#'):
            continue
        m = SAMPLE.match(line)
        if not m:
            errors.append(f'line {n}: not a sample: {line[:80]}')
            continue
        name, _, raw, value = m.groups()
        family = name
        for suffix in ('_bucket', '_sum', '_count'):
            if name.endswith(suffix) and declared.get(name[: -len(suffix)]) == 'histogram':
                family = name[: -len(suffix)]
        if family != current:
            errors.append(f'line {n}: {name} outside its family {current}')
        if family not in declared:
            errors.append(f'line {n}: {name} has no TYPE')
        labels = {}
        if raw:
            pos = 0
            while pos < len(raw):
                lm = LABEL.match(raw, pos)
                if not lm:
                    errors.append(f'line {n}: bad labels {raw[:80]}')
                    break
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            errors.append(f'line {n}: duplicate series {name}{{{raw}}}')
        series.add(key)
        samples.append((name, labels, float(value)))
    return samples, errors


def read(path, default=''):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def per_ns(path):
    """conntrack -C, and the LISTEN and SYN_RECV sockets (ss -Htan state listening state
    syn-recv) of each namespace."""
    out, ino = {}, None
    for line in read(path).splitlines():
        if line.startswith('== '):
            ino = int(line[3:])
            out[ino] = {'count': None, 'listen': {}, 'syn_recv': defaultdict(int)}
            continue
        f = line.split()
        if len(f) == 1 and f[0].isdigit() and out[ino]['count'] is None:
            out[ino]['count'] = int(f[0])
        elif len(f) >= 5 and f[0] in ('LISTEN', 'SYN-RECV'):
            addr, port = f[3].rsplit(':', 1)
            addr = addr.strip('[]').split('%')[0]
            if f[0] == 'LISTEN':
                out[ino]['listen'][(addr, port)] = (int(f[1]), int(f[2]))
            else:
                out[ino]['syn_recv'][(addr, port)] += 1
    return out


def conntrack_s(path):
    """conntrack -S: each CPU's counters."""
    cpus = {}
    for line in read(path).splitlines():
        fields = dict(kv.split('=', 1) for kv in line.split() if '=' in kv)
        if 'cpu' in fields:
            cpus[int(fields.pop('cpu'))] = {k: int(v) for k, v in fields.items()}
    return cpus


def softnet(path):
    """softnet_stat: (CPU, dropped, time_squeeze) per row; the CPU from the 13th column."""
    rows = []
    for i, line in enumerate(read(path).split('\n')):
        cols = line.split()
        if not cols:
            continue
        cpu = int(cols[12], 16) if len(cols) >= 13 else i
        rows.append((cpu, int(cols[1], 16), int(cols[2], 16)))
    return rows


def drop_map(path):
    """bpftool's JSON dump of the per-CPU drop map: (netns inode -> total, CPUs per value)."""
    text = read(path)
    if not text.strip():
        return None, 0
    totals, cpus = defaultdict(int), 0
    for e in json.loads(text):
        # struct drop_key {u64 cookie; u32 ino; u32 reason} (bpf/drop_reasons.bpf.c).
        raw = bytes(int(b, 16) for b in e.get('key', []))
        ino = int.from_bytes(raw[8:12], 'little')
        values = e.get('values', [])
        cpus = max(cpus, len(values))
        total = 0
        for v in values:
            val = v.get('value')
            if isinstance(val, list):
                val = int.from_bytes(bytes(int(b, 16) for b in val), 'little')
            total += int(val)
        totals[ino] += total
    return totals, cpus


def cpu_list(text):
    out = set()
    for part in text.strip().split(','):
        if '-' in part:
            a, b = part.split('-')
            out.update(range(int(a), int(b) + 1))
        elif part:
            out.add(int(part))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('results')
    for flag in ('pods', 'binds', 'mounts', 'procs', 'conntrack', 'time-wait'):
        ap.add_argument('--' + flag, type=int, required=True)
    args = ap.parse_args()
    r = args.results
    passed = failed = 0

    def check(name, ok, detail=''):
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f'PASS {name}')
        else:
            failed += 1
            print(f'FAIL {name}: {detail}')

    kernel = read(f'{r}/kernel').strip()
    print(f'kernel {kernel}')
    errors = read(f'{r}/errors').strip()
    check('the shape was made', 'ready' in read(f'{r}/manifest') and not errors, errors[-400:])
    text = read(f'{r}/metrics')
    if not text:
        check('the exporter was scraped', False, f'no scrape in {r}')
        print(f'node-shape {kernel}: {passed} passed, {failed} failed')
        return 1
    samples, problems = parse_exposition(text)
    check('the exposition is strict: families whole, no series twice', samples and not problems, problems[:5])

    def series(name, **want):
        return [(l, v) for n, l, v in samples if n == name and all(l.get(k) == x for k, x in want.items())]

    def value(name, **want):
        s = series(name, **want)
        return s[0][1] if len(s) == 1 else None

    # The namespaces: every one the kernel has, and only those.
    pids = {}
    for line in read(f'{r}/ns.pids').splitlines():
        ino, path = line.split()
        pids[int(ino)] = path
    binds = {int(l.split()[0]): l.split()[1] for l in read(f'{r}/ns.binds').splitlines() if l.strip()}
    init = int(read(f'{r}/init-ns', '0').strip() or 0)
    own = int(read(f'{r}/own-ns', '0').strip() or 0)

    def label(ino):
        return 'host' if ino in (init, INIT_NET_INO) else str(ino)

    # The node's namespace, where the exporter runs: the initial one in a guest, one of
    # the test's own on the host.
    node = label(own)
    kernel_ns = {label(i) for i in set(pids) | set(binds)}
    served_ns = {l['netns'] for l, _ in series('netpressure_tcp_sockets_in_use')}
    expected = len(kernel_ns) - 1
    check(f'every namespace sampled ({len(kernel_ns)} with the node\'s)', served_ns == kernel_ns,
          f'missing {sorted(kernel_ns - served_ns)[:8]}, extra {sorted(served_ns - kernel_ns)[:8]}')
    check(f'netns_sampled is {expected}, none omitted',
          value('netpressure_netns_sampled') == expected and value('netpressure_netns_omitted') == 0,
          f"{value('netpressure_netns_sampled')} sampled, {value('netpressure_netns_omitted')} omitted")
    made = {l.split()[1] for l in read(f'{r}/manifest').splitlines() if l.startswith('bind ')}
    check(f'{args.binds} namespaces held only by a bind mount, each found', len(made) == args.binds
          and made <= set(binds.values()), (len(made), len(made - set(binds.values()))))

    # Pods: each pod's namespace carries its pod's labels.
    pods = [l.split() for l in read(f'{r}/manifest').splitlines() if l.startswith('pod ')]
    pod_ns = {}
    for _, pid, ns, name, _uid in pods:
        ino = next((i for i, p in pids.items() if p == f'/proc/{pid}/ns/net'), None)
        pod_ns[ino] = (ns, name)
    labelled = {(l.get('namespace'), l.get('pod')) for l, _ in series('netpressure_tcp_sockets_in_use') if 'pod' in l}
    check(f'{args.pods} pods, each with its pod labels', len(pods) == args.pods and set(pod_ns.values()) <= labelled,
          f'{len(pods)} pods, {len(set(pod_ns.values()) - labelled)} without labels')

    # The namespaces compared value by value: those the shape made (nothing moves in
    # them) and the node's. Others on the machine (a host run) are only required to be
    # sampled: their traffic is not the test's.
    made_ns = set(pod_ns) | {ino for ino, p in binds.items() if p in made} | {own}
    before = {ino: b for ino, b in per_ns(f'{r}/before/per-ns').items() if ino in made_ns}
    # Conntrack entries: static in every namespace but the node's (long timeouts, no
    # traffic), where each scrape is a tracked connection: between before and after.
    bad = []
    for ino, b in before.items():
        got = value('netpressure_conntrack_entries', netns=label(ino))
        if label(ino) == node:
            continue
        if b['count'] is None or got != b['count']:
            bad.append((label(ino), b['count'], got))
    check(f'conntrack entries of the {len(before) - 1} namespaces made equal conntrack -C', not bad
          and len(before) == args.pods + args.binds + 1, (bad[:5], len(before)))
    c_b, c_a = (int(read(f'{r}/{w}/conntrack-C').strip() or -1) for w in ('before', 'after'))
    node_entries = value('netpressure_conntrack_entries', netns=node)
    check(f'the node\'s {node_entries} entries between conntrack -C before and after ({c_b}..{c_a}), '
          f'{args.conntrack} or more', node_entries is not None and c_b <= node_entries <= c_a
          and node_entries >= args.conntrack, (c_b, node_entries, c_a))

    # Listeners: every accept queue and its limit, in every namespace.
    bad, n = [], 0
    for ino, b in before.items():
        for (addr, port), (queue, limit) in b['listen'].items():
            n += 1
            q = value('netpressure_tcp_listen_queue_length', netns=label(ino), address=addr, port=port)
            lim = value('netpressure_tcp_listen_queue_limit', netns=label(ino), address=addr, port=port)
            if (q, lim) != (queue, limit):
                bad.append((label(ino), addr, port, (queue, limit), (q, lim)))
    full = sum(1 for b in before.values() for q, lim in b['listen'].values() if q > lim)
    counts = [(label(i), len(b['listen']), value('netpressure_tcp_listeners', netns=label(i))) for i, b in before.items()]
    bad += [c for c in counts if c[1] != c[2]]
    check(f'{n} listeners\' queues and limits, and each namespace\'s count of them, equal ss -ltn ({full} full)',
          not bad and n > args.pods, bad[:5])
    # SYN_RECV per listener.
    bad, total = [], 0
    for ino, b in before.items():
        for (addr, port), count in b['syn_recv'].items():
            total += count
            got = value('netpressure_tcp_syn_recv_sockets', netns=label(ino), address=addr, port=port)
            if got != count:
                bad.append((label(ino), addr, port, count, got))
    check(f'{total} SYN_RECV sockets per listener equal ss state syn-recv', not bad and total > 0, bad[:5])
    # TIME_WAIT: a storm in one pod's namespace, read at once after (its sockets live 60 s,
    # and only fall once it is over): between ss after and before the scrape.
    tw_ns = int(read(f'{r}/tw.ns').strip() or 0)
    tw_samples, _ = parse_exposition(read(f'{r}/metrics.tw'))
    tw = next((v for n, l, v in tw_samples if n == 'netpressure_tcp_time_wait_sockets' and l.get('netns') == str(tw_ns)), None)
    tw_b, tw_a = int(read(f'{r}/tw.before') or 0), int(read(f'{r}/tw.after') or 0)
    check(f'{args.time_wait} TIME_WAIT sockets of a storm between ss after and before ({tw_a}..{tw_b})',
          tw is not None and tw_a <= tw <= tw_b and tw_b >= args.time_wait * 0.9, tw)

    # Conntrack's per-CPU counters: one series per possible CPU, each between the
    # kernel's readings.
    cpu_lines = read(f'{r}/cpus').splitlines() + ['', '']
    online, possible = cpu_list(cpu_lines[0]), cpu_list(cpu_lines[1])
    cs_b, cs_a = conntrack_s(f'{r}/before/conntrack-S'), conntrack_s(f'{r}/after/conntrack-S')
    served_cpus = {int(l['cpu']) for l, _ in series('netpressure_conntrack_found_total', netns=node) if 'cpu' in l}
    check(f'conntrack counters for each of the {len(possible)} possible CPUs', served_cpus == possible == set(cs_b),
          f'served {len(served_cpus)}, conntrack -S {len(cs_b)}, possible {len(possible)}')
    # Per CPU in every pod's namespace they were pods x possible CPUs x counters (115,584
    # of 124,497 series at this shape on 6.1): the node's namespace's only.
    pod_cpu = sorted({(n, l.get('netns')) for n, l, _ in samples if 'cpu' in l and l.get('netns', node) != node})
    check('per-CPU series in the node\'s namespace only', not pod_cpu, pod_cpu[:5])
    bad = []
    for field in ('found', 'invalid', 'insert_failed', 'drop', 'early_drop', 'error', 'search_restart'):
        for cpu in cs_b:
            if field not in cs_b[cpu]:
                continue
            got = value(f'netpressure_conntrack_{field}_total', netns=node, cpu=str(cpu))
            if got is None or not cs_b[cpu][field] <= got <= cs_a.get(cpu, {}).get(field, -1):
                bad.append((field, cpu, cs_b[cpu][field], got, cs_a.get(cpu, {}).get(field)))
    check('each CPU\'s conntrack counters between conntrack -S before and after', not bad, bad[:5])

    # softnet: a series for every online CPU's row, numbered by the row's CPU column.
    sn_b, sn_a = softnet(f'{r}/before/softnet_stat'), softnet(f'{r}/after/softnet_stat')
    served = {int(l['cpu']): v for l, v in series('netpressure_softnet_dropped_total') if 'cpu' in l}
    check(f'softnet series for each of the {len(online)} online CPUs\' rows',
          set(served) == {c for c, _, _ in sn_b} == online, f'served {len(served)}, rows {len(sn_b)}, online {len(online)}')
    drops_b, drops_a = sum(d for _, d, _ in sn_b), sum(d for _, d, _ in sn_a)
    check('softnet drops between the rows\' sums before and after', drops_b <= sum(served.values()) <= drops_a,
          (drops_b, sum(served.values()), drops_a))

    # Descriptors: file-nr moves with every process that opens a file; within 5%.
    fd_b = int(read(f'{r}/before/file-nr').split()[0])
    fd_a = int(read(f'{r}/after/file-nr').split()[0])
    fd = value('netpressure_fd_allocated')
    lo, hi = min(fd_b, fd_a) * 0.95, max(fd_b, fd_a) * 1.05
    check(f'allocated descriptors within 5% of file-nr ({fd_b}, {fd_a})', fd is not None and lo <= fd <= hi, fd)

    # Drops: the per-CPU map, read with bpftool, against the served counters per namespace.
    up = value('netpressure_source_up', source='drop_reasons')
    map_b, cpus_b = drop_map(f'{r}/before/drops.json')
    map_a, _ = drop_map(f'{r}/after/drops.json')
    if map_b is None:
        log = read(f'{r}/log.final')
        said = [l for l in log.splitlines() if 'drop_reasons: off on this kernel' in l]
        check('drop reasons off on this kernel, said once, source down', up == 0 and len(said) == 1, (up, said))
        print(f'COULD NOT drop reasons: {said[0].split("msg=", 1)[-1] if said else "?"}')
    else:
        check(f'the drop map holds a value for each of the {len(possible)} possible CPUs', cpus_b == len(possible), cpus_b)
        served = defaultdict(float)
        for l, v in series('netpressure_packet_drops_total'):
            served[l['netns']] += v
        # Drops with no namespace (key 0) are served apart, with the node's labels.
        served['0'] = sum(v for _, v in series('netpressure_packet_drops_unattributed_total', netns=node))
        bad = []
        for ino in set(map_b) | set(map_a or {}):
            got = served.get(label(ino) if ino else '0', 0)
            if not map_b.get(ino, 0) <= got <= (map_a or {}).get(ino, 0):
                bad.append((label(ino), map_b.get(ino), got, (map_a or {}).get(ino)))
        reasons = {l['reason'] for l, _ in series('netpressure_packet_drops_total', netns=node)}
        check(f'drops per namespace between bpftool\'s dumps before and after ({sorted(reasons)})',
              not bad and len(reasons) >= 2, bad[:5])

    # The node pass (one BPF run for every namespace): loaded on 5.17+ and trusted for
    # both fields once compared with the kernel's own interfaces; the per-namespace path
    # before. Either way the values above were checked against the kernel's tools.
    version = tuple(int(x) for x in re.findall(r'\d+', kernel)[:2]) if re.match(r'\d+\.\d+', kernel) else (0, 0)
    up = value('netpressure_node_pass_up')
    used = {l['field']: v for l, v in series('netpressure_node_pass_used')}
    if version >= (5, 17):
        check(f'the node pass serves conntrack, listeners and TIME_WAIT on {kernel} ({used})',
              up == 1 and all(used.get(f) == 1 for f in ('conntrack', 'listeners', 'time_wait')), (up, used))
    else:
        check(f'each namespace read on its own on {kernel}, before bpf_loop (node pass up {up})', up == 0, up)
    pass_path = (f'node pass (conntrack {"pass" if used.get("conntrack") == 1 else "per namespace"}, '
                 f'listeners {"pass" if used.get("listeners") == 1 else "per namespace"}, '
                 f'TIME_WAIT {"pass" if used.get("time_wait") == 1 else "per namespace"}), '
                 f'{value("netpressure_node_pass_runs_total")} runs, '
                 f'{(value("netpressure_node_pass_seconds_total") or 0) * 1000:.1f} ms in all') if up == 1 else 'each namespace on its own'

    mounts = int(read(f'{r}/mounts') or 0)
    procs = int(read(f'{r}/processes') or 0)
    check(f'{args.mounts} mounts or more in the table ({mounts})', mounts >= args.mounts, mounts)
    check(f'{args.procs} processes or more ({procs})', procs >= args.procs, procs)
    down = sorted(l['source'] for l, v in series('netpressure_source_up') if v == 0)
    # Every source runs in every other namespace too, but those the kernel lacks.
    failing = [(l['source'], v) for l, v in series('netpressure_netns_source_down') if v and l['source'] not in down]
    check('no source down in any of the other namespaces', not failing, failing)
    print(f'COULD NOT sources down: {down or "none"}')

    # The report: costs as measured in this run.
    times = dict(l.split(' ', 1) for l in read(f'{r}/times').splitlines() if ' ' in l)
    ready = times.get('ready', '').split()
    start_up = float(ready[1]) - float(ready[0]) if len(ready) == 2 else None
    dur = {l['source']: v for l, v in series('netpressure_source_duration_seconds')}
    hist_sum, hist_n = value('netpressure_sample_duration_seconds_sum'), value('netpressure_sample_duration_seconds_count')
    report = [
        f'kernel: {kernel}',
        f'CPUs: {len(online)} online of {len(possible)} possible',
        f'namespaces: {len(kernel_ns)} ({len(pods)} pods, {len(binds)} bind-mounted), mounts {mounts}, processes {procs}',
        f'start-up to /-/ready: {start_up:.1f} s' if start_up is not None else 'start-up: ?',
        f'all namespaces sampled at {times.get("all-sampled", "?")} s of uptime (exporter started at {ready[0] if ready else "?"} s)',
        f'process CPU: {value("process_cpu_seconds_total")} s, RSS: {(value("process_resident_memory_bytes") or 0) / 2**20:.1f} MiB',
        f'sample duration: mean {hist_sum / hist_n * 1000:.2f} ms over {int(hist_n)} samples' if hist_n else 'sample duration: ?',
        'slowest sources (last run): ' + ', '.join(f'{k} {v * 1000:.1f} ms' for k, v in sorted(dur.items(), key=lambda x: -x[1])[:4]),
        f'sources down: {down or "none"}',
        f'other namespaces read by: {pass_path}',
        f'wall time of the run: {times.get("wall", "?")} s (in a guest, under software emulation: the emulator\'s costs, not a node\'s)',
    ]
    with open(f'{r}/report.txt', 'w') as f:
        f.write('\n'.join(report) + '\n')
    print('\n'.join('REPORT ' + l for l in report))
    print(f'node-shape {kernel}: {passed} passed, {failed} failed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
