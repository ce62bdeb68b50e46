// The alert rules: rendered into alerts/netpressure.rules.yml and the PrometheusRule by
// mixin/render.py. Every selector, threshold and `for` comes from _config.
// '5m' as the descriptions say it: '5 minutes'.
local human(d) =
  local n = std.parseInt(std.substr(d, 0, std.length(d) - 1));
  local unit = { s: 'second', m: 'minute', h: 'hour' }[std.substr(d, std.length(d) - 1, 1)];
  '%d %s%s' % [n, unit, if n == 1 then '' else 's'];
// The sources and destinations that fill a table, from the exporter's breakdown (appended to
// the conntrack alerts' descriptions).
local whoFills = ' ' + "{{ $who := printf \"sort_desc(topk(3, netpressure_conntrack_top_source_entries{instance='%s',netns='%s',source_address!='other'}))\" $labels.instance $labels.netns | query }}{{ if $who }}Top sources: {{ range $i, $s := $who }}{{ if $i }}, {{ end }}{{ $s.Labels.source_address }}{{ with $s.Labels.source_pod }} (pod {{ $s.Labels.source_namespace }}/{{ . }}){{ end }} {{ $s.Value | humanize }}{{ end }}. Top destinations: {{ range $i, $d := printf \"sort_desc(topk(3, netpressure_conntrack_top_destination_entries{instance='%s',netns='%s',destination_address!='other'}))\" $labels.instance $labels.netns | query }}{{ if $i }}, {{ end }}{{ $d.Labels.protocol }} {{ $d.Labels.destination_address }}:{{ $d.Labels.destination_port }} {{ $d.Value | humanize }}{{ end }}.{{ else }}No breakdown of this table yet (the exporter takes one above --collector.conntrack.breakdown-threshold).{{ end }}";
{
  prometheusAlerts+:: {
    groups+: [
      {
        name: 'netpressure-conntrack',
        rules: [
          // Packets are being dropped now, or the table reached its limit in the peak
          // window (a spike between scrapes included). No `for`: users see it already.
          {
            alert: 'NetpressureConntrackTableFull',
            expr: |||
              sum without (cpu) (increase(netpressure_conntrack_drop_total{%(selector)s}[2m])) > 0
              or
              netpressure_conntrack_entries_peak{%(selector)s} >= (netpressure_conntrack_entries_limit{%(selector)s} > 0)
            ||| % $._config,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'A conntrack table is full and new connections are being dropped.',
              description: "The conntrack table of network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} is full: it holds {{ printf \"netpressure_conntrack_entries_peak{instance='%s',netns='%s'}\" $labels.instance $labels.netns | query | first | value | humanize }} entries at peak against a limit of {{ printf \"netpressure_conntrack_entries_limit{instance='%s',netns='%s'}\" $labels.instance $labels.netns | query | first | value | humanize }}, and the kernel logs \"nf_conntrack: table full, dropping packet\"." + whoFills,
              runbook_url: $._config.runbookURLPattern % 'NetpressureConntrackTableFull',
            },
          },
          {
            alert: 'NetpressureConntrackTableFilling',
            expr: |||
              netpressure_conntrack_entries_peak{%(selector)s} / (netpressure_conntrack_entries_limit{%(selector)s} > 0) > %(conntrackFillingWarning)g
            ||| % $._config,
            'for': $._config.conntrackFillingWarningFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'A conntrack table is over %d%% of its limit.' % (100 * $._config.conntrackFillingWarning),
              description: 'The conntrack table of network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} peaked at {{ $value | humanizePercentage }} of nf_conntrack_max over the last ' + human($._config.conntrackFillingWarningFor) + '.' + whoFills,
              runbook_url: $._config.runbookURLPattern % 'NetpressureConntrackTableFilling',
            },
          },
          {
            alert: 'NetpressureConntrackTableFilling',
            expr: |||
              netpressure_conntrack_entries_peak{%(selector)s} / (netpressure_conntrack_entries_limit{%(selector)s} > 0) > %(conntrackFillingCritical)g
            ||| % $._config,
            'for': $._config.conntrackFillingCriticalFor,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'A conntrack table is over %d%% of its limit.' % (100 * $._config.conntrackFillingCritical),
              description: 'The conntrack table of network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} peaked at {{ $value | humanizePercentage }} of nf_conntrack_max: it is about to drop packets.' + whoFills,
              runbook_url: $._config.runbookURLPattern % 'NetpressureConntrackTableFilling',
            },
          },
          // Full within the forecast horizon at the growth of the window, already over
          // the minimum fill.
          {
            alert: 'NetpressureConntrackTableFilling',
            expr: |||
              (
                predict_linear(netpressure_conntrack_entries{%(selector)s}[%(conntrackForecastWindow)s], %(conntrackForecastHorizonSeconds)g)
                  >= (netpressure_conntrack_entries_limit{%(selector)s} > 0)
              )
              and
              netpressure_conntrack_entries{%(selector)s} / (netpressure_conntrack_entries_limit{%(selector)s} > 0) > %(conntrackForecastMinFill)g
            ||| % $._config,
            'for': $._config.conntrackForecastFor,
            labels: { severity: 'warning', forecast: '1h' },
            annotations: {
              summary: 'A conntrack table will be full within the hour at its current growth.',
              description: 'The conntrack table of network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} is over half full and, growing as in the last ' + human($._config.conntrackForecastWindow) + ', reaches nf_conntrack_max within ' + (if $._config.conntrackForecastHorizonSeconds == 3600 then 'an hour' else human('%ds' % $._config.conntrackForecastHorizonSeconds)) + '.' + whoFills,
              runbook_url: $._config.runbookURLPattern % 'NetpressureConntrackTableFilling',
            },
          },
          {
            alert: 'NetpressureConntrackInsertFailed',
            expr: |||
              sum without (cpu) (rate(netpressure_conntrack_insert_failed_total{%(selector)s}[5m])) > 0
            ||| % $._config,
            'for': $._config.insertFailedFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Conntrack insertions are failing (the race behind 5-second DNS delays).',
              description: 'Network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} fails {{ printf "%.2f" $value }} conntrack insertions a second; the packets are dropped and clients retry (UDP DNS queries after 5 s).',
              runbook_url: $._config.runbookURLPattern % 'NetpressureConntrackInsertFailed',
            },
          },
          // One alert per node, not per namespace: the limit and the hash size are global.
          {
            alert: 'NetpressureConntrackLimitChanged',
            expr: |||
              max by (job, instance) (changes(netpressure_conntrack_entries_limit{%(selector)s}[15m])) > 0
              or
              max by (job, instance) (changes(netpressure_conntrack_buckets{%(selector)s}[15m])) > 0
            ||| % $._config,
            labels: { severity: 'info' },
            annotations: {
              summary: 'nf_conntrack_max or the conntrack hash size changed.',
              description: "On {{ $labels.instance }}, nf_conntrack_max is now {{ printf \"max(netpressure_conntrack_entries_limit{instance='%s'})\" $labels.instance | query | first | value | humanize }} and nf_conntrack_buckets {{ printf \"max(netpressure_conntrack_buckets{instance='%s'})\" $labels.instance | query | first | value | humanize }} after a change in the last 15 minutes: kube-proxy rewrites both at start-up.",
              runbook_url: $._config.runbookURLPattern % 'NetpressureConntrackLimitChanged',
            },
          },
        ],
      },
      {
        name: 'netpressure-sockets',
        rules: [
          {
            alert: 'NetpressureListenQueueOverflow',
            expr: |||
              increase(netpressure_tcp_listen_overflows_total{%(selector)s}[5m]) > 0
              or
              increase(netpressure_tcp_listen_drops_total{%(selector)s}[5m]) > 0
            ||| % $._config,
            'for': $._config.listenOverflowFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: "A listener's accept queue overflows and connections are dropped.",
              description: "Network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} dropped {{ $value | humanize }} connections on listeners in 5 minutes. Listeners that reached their limit in the peak window: {{ range $i, $l := printf \"netpressure_tcp_listen_queue_length_peak{instance='%s',netns='%s'} >= on (instance, netns, address, port) netpressure_tcp_listen_queue_limit\" $labels.instance $labels.netns | query }}{{ if $i }}, {{ end }}{{ $l.Labels.address }}:{{ $l.Labels.port }}{{ else }}none now (the overflow was shorter than the window, or its listener is not served){{ end }}.",
              runbook_url: $._config.runbookURLPattern % 'NetpressureListenQueueOverflow',
            },
          },
          {
            alert: 'NetpressureSynBacklogDrops',
            expr: |||
              increase(netpressure_tcp_syn_queue_drops_total{%(selector)s}[5m]) > 0
              or
              netpressure_tcp_syn_recv_sockets{%(selector)s}
                / on (job, instance, netns) group_left ()
              (netpressure_tcp_max_syn_backlog{%(selector)s} > 0) > %(synBacklogWarning)g
            ||| % $._config,
            'for': $._config.synBacklogFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: "SYNs are dropped, or a listener's SYN queue is nearly full.",
              description: 'Network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} {{ with $labels.port }}has {{ $value | humanizePercentage }} of tcp_max_syn_backlog half-open on listener {{ $labels.address }}:{{ . }}{{ else }}dropped {{ $value | humanize }} SYNs in 5 minutes because a SYN queue was full{{ end }}.',
              runbook_url: $._config.runbookURLPattern % 'NetpressureSynBacklogDrops',
            },
          },
          {
            alert: 'NetpressureLocalPortsExhausting',
            expr: |||
              sum without (state) (netpressure_tcp_remote_sockets{%(selector)s})
                / on (job, instance, netns) group_left ()
              (netpressure_local_port_range_size{%(selector)s} > 0) > %(localPortsWarning)g
            ||| % $._config,
            'for': $._config.localPortsWarningFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Connections to one destination hold most of the local port range.',
              description: 'Network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} holds {{ $value | humanizePercentage }} of its ephemeral ports towards {{ $labels.remote_address }}:{{ $labels.remote_port }}; connect() fails with EADDRNOTAVAIL when they run out.',
              runbook_url: $._config.runbookURLPattern % 'NetpressureLocalPortsExhausting',
            },
          },
          {
            alert: 'NetpressureLocalPortsExhausting',
            expr: |||
              sum without (state) (netpressure_tcp_remote_sockets{%(selector)s})
                / on (job, instance, netns) group_left ()
              (netpressure_local_port_range_size{%(selector)s} > 0) > %(localPortsCritical)g
            ||| % $._config,
            'for': $._config.localPortsCriticalFor,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'Connections to one destination have nearly exhausted the local port range.',
              description: 'Network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} holds {{ $value | humanizePercentage }} of its ephemeral ports towards {{ $labels.remote_address }}:{{ $labels.remote_port }}: new connections to it are about to fail.',
              runbook_url: $._config.runbookURLPattern % 'NetpressureLocalPortsExhausting',
            },
          },
          {
            alert: 'NetpressureTimeWaitLimit',
            expr: |||
              netpressure_tcp_time_wait_sockets_peak{%(selector)s} / (netpressure_tcp_time_wait_limit{%(selector)s} > 0) > %(timeWaitWarning)g
              or
              increase(netpressure_tcp_time_wait_overflows_total{%(selector)s}[5m]) > 0
            ||| % $._config,
            'for': $._config.timeWaitFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'TIME_WAIT sockets are near tcp_max_tw_buckets, or past it.',
              description: "Network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} held {{ printf \"netpressure_tcp_time_wait_sockets_peak{instance='%s',netns='%s'}\" $labels.instance $labels.netns | query | first | value | humanize }} TIME_WAIT sockets at peak against tcp_max_tw_buckets of {{ printf \"netpressure_tcp_time_wait_limit{instance='%s',netns='%s'}\" $labels.instance $labels.netns | query | first | value | humanize }}; past it, closing connections skip TIME_WAIT.",
              runbook_url: $._config.runbookURLPattern % 'NetpressureTimeWaitLimit',
            },
          },
          {
            alert: 'NetpressureSoftnetDrops',
            expr: |||
              sum without (cpu) (rate(netpressure_softnet_dropped_total{%(selector)s}[5m])) > 0
            ||| % $._config,
            'for': $._config.softnetDropsFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: "The kernel drops incoming packets because a CPU's input backlog is full.",
              description: "{{ $labels.instance }} drops {{ $value | humanize }} packets a second at netdev_max_backlog ({{ printf \"netpressure_softnet_backlog_limit{instance='%s'}\" $labels.instance | query | first | value | humanize }}).",
              runbook_url: $._config.runbookURLPattern % 'NetpressureSoftnetDrops',
            },
          },
        ],
      },
      {
        name: 'netpressure-fds',
        rules: [
          {
            alert: 'NetpressureFileDescriptorsExhausting',
            expr: |||
              netpressure_fd_allocated_peak{%(selector)s} / (netpressure_fd_limit{%(selector)s} > 0) > %(fdWarning)g
              or
              netpressure_process_open_fds{%(selector)s} / (netpressure_process_fd_limit{%(selector)s} > 0) > %(fdWarning)g
            ||| % $._config,
            'for': $._config.fdWarningFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'The system file table or a process is over %d%% of its descriptor limit.' % (100 * $._config.fdWarning),
              description: '{{ with $labels.comm }}Process {{ . }} (PID {{ $labels.pid }}){{ else }}The system file table{{ end }} on {{ $labels.instance }} uses {{ $value | humanizePercentage }} of its file descriptor limit.',
              runbook_url: $._config.runbookURLPattern % 'NetpressureFileDescriptorsExhausting',
            },
          },
          {
            alert: 'NetpressureFileDescriptorsExhausting',
            expr: |||
              netpressure_fd_allocated_peak{%(selector)s} / (netpressure_fd_limit{%(selector)s} > 0) > %(fdCritical)g
              or
              netpressure_process_open_fds{%(selector)s} / (netpressure_process_fd_limit{%(selector)s} > 0) > %(fdCritical)g
            ||| % $._config,
            'for': $._config.fdCriticalFor,
            labels: { severity: 'critical' },
            annotations: {
              summary: 'The system file table or a process is about to run out of file descriptors.',
              description: '{{ with $labels.comm }}Process {{ . }} (PID {{ $labels.pid }}){{ else }}The system file table{{ end }} on {{ $labels.instance }} uses {{ $value | humanizePercentage }} of its file descriptor limit: "too many open files" is next.',
              runbook_url: $._config.runbookURLPattern % 'NetpressureFileDescriptorsExhausting',
            },
          },
          // Every pod's fullest process, wherever it ranks on the node (the alerts above
          // see the node's top --collector.processes.top processes only).
          {
            alert: 'NetpressurePodFileDescriptorsExhausting',
            expr: |||
              netpressure_pod_fd_usage_ratio{%(selector)s} > %(podFdWarning)g
            ||| % $._config,
            'for': $._config.podFdWarningFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: "A pod's process is over %d%% of its file descriptor limit." % (100 * $._config.podFdWarning),
              description: 'The fullest process of pod {{ $labels.namespace }}/{{ $labels.pod }} on {{ $labels.instance }} uses {{ $value | humanizePercentage }} of its own file descriptor limit (RLIMIT_NOFILE).',
              runbook_url: $._config.runbookURLPattern % 'NetpressurePodFileDescriptorsExhausting',
            },
          },
        ],
      },
      {
        name: 'netpressure-drop-reasons',
        rules: [
          // The kernel's own reason for each dropped packet, per pod (the drop_reasons
          // collector): one alert per limit that has a reason of its own; each runbook leads
          // to its limit's. A full SYN queue has none on 6.18 (the refused SYN is freed as
          // consumed): NetpressureSynBacklogDrops covers it from the TCP counters.
          //
          // netfilter_drop alone is any DROP verdict (a NetworkPolicy, a firewall rule); with
          // conntrack's own drop counter rising in the same namespace it is the table that is
          // full.
          {
            alert: 'NetpressureDropsTableFull',
            expr: |||
              rate(netpressure_packet_drops_total{%(selector)s,reason="netfilter_drop"}[5m]) > 0
              and on (job, instance, netns)
              sum without (cpu) (rate(netpressure_conntrack_drop_total{%(selector)s}[5m])) > 0
            ||| % $._config,
            'for': $._config.dropsFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: "The kernel drops a pod's packets because its conntrack table is full.",
              description: 'Network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} has dropped {{ $value | humanize }} packets a second for ' + human($._config.dropsFor) + " with the kernel's reason netfilter_drop, while conntrack counts table-full drops there.",
              runbook_url: $._config.runbookURLPattern % 'NetpressureDropsTableFull',
            },
          },
          {
            alert: 'NetpressureDropsListenOverflow',
            expr: |||
              rate(netpressure_packet_drops_total{%(selector)s,reason="tcp_listen_overflow"}[5m]) > 0
            ||| % $._config,
            'for': $._config.dropsFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: "The kernel drops a pod's connections because a listener's accept queue is full.",
              description: 'Network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} has dropped {{ $value | humanize }} packets a second for ' + human($._config.dropsFor) + " with the kernel's reason tcp_listen_overflow: handshakes completed into an accept queue at its backlog.",
              runbook_url: $._config.runbookURLPattern % 'NetpressureDropsListenOverflow',
            },
          },
          {
            alert: 'NetpressureDropsInputBacklog',
            expr: |||
              rate(netpressure_packet_drops_total{%(selector)s,reason="cpu_backlog"}[5m]) > 0
            ||| % $._config,
            'for': $._config.dropsFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: "The kernel drops a pod's incoming packets because a CPU's input backlog is full.",
              description: 'Network namespace {{ $labels.netns }}{{ with $labels.pod }} (pod {{ $labels.namespace }}/{{ . }}){{ end }} on {{ $labels.instance }} has dropped {{ $value | humanize }} packets a second for ' + human($._config.dropsFor) + " with the kernel's reason cpu_backlog, at netdev_max_backlog.",
              runbook_url: $._config.runbookURLPattern % 'NetpressureDropsInputBacklog',
            },
          },
        ],
      },
      {
        name: 'netpressure-exporter',
        rules: [
          {
            alert: 'NetpressureExporterSourceDown',
            expr: |||
              netpressure_source_up{%(selector)s} == 0
            ||| % $._config,
            'for': $._config.sourceDownFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'A netpressure_exporter source cannot read the kernel.',
              description: 'Source {{ $labels.source }} of netpressure_exporter on {{ $labels.instance }} has failed for ' + human($._config.sourceDownFor) + "; its metrics are missing or come from a fallback. The exporter's log says why once.",
              runbook_url: $._config.runbookURLPattern % 'NetpressureExporterSourceDown',
            },
          },
          // A changed --web.config.file (or a certificate it names) did not load: the
          // previous configuration is still served. Before a renewed certificate's
          // predecessor expires, this is the warning.
          {
            alert: 'NetpressureWebConfigReloadFailed',
            expr: |||
              netpressure_web_config_last_reload_successful{%(selector)s} == 0
            ||| % $._config,
            'for': $._config.webConfigReloadFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'netpressure_exporter cannot load its changed web configuration.',
              description: 'netpressure_exporter on {{ $labels.instance }} has failed for ' + human($._config.webConfigReloadFor) + " to load its changed --web.config.file or a certificate or key it names; it still serves the previous configuration (and certificate). The exporter's log says why.",
              runbook_url: $._config.runbookURLPattern % 'NetpressureWebConfigReloadFailed',
            },
          },
          {
            alert: 'NetpressureExporterDown',
            expr: |||
              up{%(selector)s} == 0
            ||| % $._config,
            'for': $._config.exporterDownFor,
            labels: { severity: 'warning' },
            annotations: {
              summary: 'Prometheus cannot scrape netpressure_exporter.',
              description: 'The netpressure_exporter target {{ $labels.instance }} has been down for ' + human($._config.exporterDownFor) + ": none of this node's pressure alerts can fire.",
              runbook_url: $._config.runbookURLPattern % 'NetpressureExporterDown',
            },
          },
        ],
      },
    ],
  },
}
