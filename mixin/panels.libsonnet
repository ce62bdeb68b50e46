// The panels of the three dashboards: title, description, unit, queries (with their legends),
// and kind (timeseries unless a table). The queries use the dashboards' variables
// ($job, $instance, $namespace, $pod); the variables use _config.selector.
{
  fleet: [
    {
      title: 'Nodes closest to a full conntrack table',
      description: 'Peak conntrack entries over nf_conntrack_max, worst namespace per node (top 10). At 100 % new connections are dropped.',
      unit: 'percentunit',
      targets: [
        {
          expr: 'topk(10, max by (instance) (netpressure_conntrack_entries_peak{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"} / (netpressure_conntrack_entries_limit{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"} > 0)))',
          legend: '{{instance}}',
        },
      ],
    },
    {
      title: 'Conntrack drops by node',
      description: 'Packets dropped because a conntrack table was full, per second.',
      unit: 'pps',
      targets: [
        {
          expr: 'sum by (instance) (rate(netpressure_conntrack_drop_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))',
          legend: '{{instance}}',
        },
      ],
    },
    {
      title: 'Drops by reason across the fleet',
      description: 'Packets the kernel dropped, per second, by its own drop reason (enum skb_drop_reason, counted in the kernel by the drop_reasons collector): the 10 largest node and reason pairs. netfilter_drop: a full conntrack table (with conntrack drops) or a DROP rule; tcp_listen_overflow: a full accept queue; cpu_backlog: netdev_max_backlog; no_socket: nothing listening (or a syncookie ACK past a full accept queue).',
      unit: 'pps',
      targets: [
        {
          expr: 'topk(10, sum by (instance, reason) (rate(netpressure_packet_drops_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval])))',
          legend: '{{instance}} {{reason}}',
        },
      ],
    },
    {
      title: 'Listen overflows by node',
      description: "Connections dropped because a listener's accept queue was full, per second.",
      unit: 'cps',
      targets: [
        {
          expr: 'sum by (instance) (rate(netpressure_tcp_listen_overflows_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))',
          legend: '{{instance}}',
        },
      ],
    },
    {
      title: 'Conntrack insert failures by node',
      description: 'Failed conntrack insertions per second (the race behind 5 s DNS delays).',
      unit: 'pps',
      targets: [
        {
          expr: 'sum by (instance) (rate(netpressure_conntrack_insert_failed_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))',
          legend: '{{instance}}',
        },
      ],
    },
    {
      title: 'Pods with the fullest conntrack tables',
      description: 'Top 10 namespaces by peak conntrack entries over the limit, with their pod when they belong to one.',
      unit: 'percentunit',
      targets: [
        {
          expr: 'topk(10, netpressure_conntrack_entries_peak{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"} / (netpressure_conntrack_entries_limit{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"} > 0))',
          legend: '',
        },
      ],
      kind: 'table',
    },
    {
      title: 'Who fills conntrack tables across the fleet',
      description: 'The largest sources in the breakdowns of tables over the threshold, on every node: a pod (source_namespace/source_pod) opening flows on many nodes shows here first.',
      unit: 'short',
      targets: [
        {
          expr: 'topk(10, sum by (instance, netns, source_address, source_namespace, source_pod) (netpressure_conntrack_top_source_entries{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod", source_address!="other"}))',
          legend: '',
        },
      ],
      kind: 'table',
    },
    {
      title: 'Nodes closest to their file descriptor limit',
      description: 'System file handles over fs.file-max (peak), per node.',
      unit: 'percentunit',
      targets: [
        {
          expr: 'topk(10, netpressure_fd_allocated_peak{job=~"$job", instance=~"$instance"} / (netpressure_fd_limit{job=~"$job", instance=~"$instance"} > 0))',
          legend: '{{instance}}',
        },
      ],
    },
    {
      title: 'Softnet drops by node',
      description: 'Packets dropped at netdev_max_backlog, per second.',
      unit: 'pps',
      targets: [
        {
          expr: 'sum by (instance) (rate(netpressure_softnet_dropped_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))',
          legend: '{{instance}}',
        },
      ],
    },
  ],
  node: [
    {
      title: 'Conntrack entries, peak and limit',
      description: "Entries per namespace, their peak over the exporter's window (spikes between scrapes), and nf_conntrack_max.",
      unit: 'short',
      targets: [
        {
          expr: 'netpressure_conntrack_entries{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{netns}} {{pod}} entries',
        },
        {
          expr: 'netpressure_conntrack_entries_peak{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{netns}} {{pod}} peak',
        },
        {
          expr: 'max by (instance) (netpressure_conntrack_entries_limit{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"})',
          legend: 'limit',
        },
      ],
    },
    {
      title: 'Conntrack drops, early drops and insert failures',
      description: 'Per second, summed over CPUs.',
      unit: 'pps',
      targets: [
        {
          expr: 'sum by (netns, pod) (rate(netpressure_conntrack_drop_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))',
          legend: '{{netns}} {{pod}} drop',
        },
        {
          expr: 'sum by (netns, pod) (rate(netpressure_conntrack_early_drop_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))',
          legend: '{{netns}} {{pod}} early drop',
        },
        {
          expr: 'sum by (netns, pod) (rate(netpressure_conntrack_insert_failed_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))',
          legend: '{{netns}} {{pod}} insert failed',
        },
      ],
    },
    {
      title: 'Drops by reason',
      description: 'Packets the kernel dropped, per second, per namespace and drop reason (enum skb_drop_reason, counted in the kernel by the drop_reasons collector). netfilter_drop: a full conntrack table (with conntrack drops) or a DROP rule; tcp_listen_overflow: a full accept queue; cpu_backlog: netdev_max_backlog; no_socket: nothing listening (or a syncookie ACK past a full accept queue). Reasons that never dropped have no series.',
      unit: 'pps',
      targets: [
        {
          expr: 'sum by (netns, pod, reason) (rate(netpressure_packet_drops_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))',
          legend: '{{netns}} {{pod}} {{reason}}',
        },
      ],
    },
    {
      title: 'Who fills the table: top sources',
      description: 'From the breakdown the exporter takes of a table over --collector.conntrack.breakdown-threshold (75 % by default): entries by original source address, with the pod on the node that owns it (source_namespace, source_pod). Empty while every table is below the threshold.',
      unit: 'short',
      targets: [
        {
          expr: 'sort_desc(netpressure_conntrack_top_source_entries{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"})',
          legend: '',
        },
      ],
      kind: 'table',
    },
    {
      title: 'Who fills the table: top destinations',
      description: 'Entries by original destination address, port and protocol (a Service IP, kube-dns on 53/udp, an external API), from the same breakdown.',
      unit: 'short',
      targets: [
        {
          expr: 'sort_desc(netpressure_conntrack_top_destination_entries{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"})',
          legend: '',
        },
      ],
      kind: 'table',
    },
    {
      title: 'Conntrack entries by state',
      description: 'From the breakdown: TCP states, and for other protocols unreplied / replied / assured. Many unreplied entries: a flood or a dead upstream; time_wait: short connections; established: long-lived or leaked ones.',
      unit: 'short',
      targets: [
        {
          expr: 'netpressure_conntrack_breakdown_entries{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{netns}} {{pod}} {{protocol}} {{state}}',
        },
      ],
    },
    {
      title: 'Listeners: accept queue, peak and limit',
      description: 'Every served listener: connections waiting for accept(), the peak over the window, the limit (backlog after somaxconn), and half-open connections.',
      unit: 'short',
      targets: [
        {
          expr: 'netpressure_tcp_listen_queue_length{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '',
        },
        {
          expr: 'netpressure_tcp_listen_queue_length_peak{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '',
        },
        {
          expr: 'netpressure_tcp_listen_queue_limit{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '',
        },
        {
          expr: 'netpressure_tcp_syn_recv_sockets{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '',
        },
      ],
      kind: 'table',
    },
    {
      title: 'Listen overflows and SYN queue drops',
      description: 'Connections dropped at a full accept queue, and SYNs dropped at a full SYN queue, per second.',
      unit: 'cps',
      targets: [
        {
          expr: 'rate(netpressure_tcp_listen_overflows_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval])',
          legend: '{{netns}} {{pod}} overflows',
        },
        {
          expr: 'rate(netpressure_tcp_syn_queue_drops_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval])',
          legend: '{{netns}} {{pod}} SYN drops',
        },
      ],
    },
    {
      title: 'TIME_WAIT sockets, peak and limit',
      description: 'TIME_WAIT sockets per namespace, their peak, and tcp_max_tw_buckets.',
      unit: 'short',
      targets: [
        {
          expr: 'netpressure_tcp_time_wait_sockets{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{netns}} {{pod}}',
        },
        {
          expr: 'netpressure_tcp_time_wait_sockets_peak{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{netns}} {{pod}} peak',
        },
        {
          expr: 'netpressure_tcp_time_wait_limit{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{netns}} {{pod}} limit',
        },
      ],
    },
    {
      title: 'Remotes by local-port pressure',
      description: 'Share of the ephemeral port range held towards each destination (all states). At 100 % connect() fails with EADDRNOTAVAIL. Empty while no namespace holds 1/8 of its port range in TCP sockets: no destination can then hold more, and the scan is skipped.',
      unit: 'percentunit',
      targets: [
        {
          expr: 'topk(20, sum without (state) (netpressure_tcp_remote_sockets{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}) / on (job, instance, netns) group_left () (netpressure_local_port_range_size{job=~"$job", instance=~"$instance"} > 0))',
          legend: '',
        },
      ],
      kind: 'table',
    },
    {
      title: 'Top processes by file descriptors',
      description: 'Open descriptors over RLIMIT_NOFILE for the processes nearest their limit.',
      unit: 'percentunit',
      targets: [
        {
          expr: 'netpressure_process_open_fds{job=~"$job", instance=~"$instance"} / (netpressure_process_fd_limit{job=~"$job", instance=~"$instance"} > 0)',
          legend: '',
        },
      ],
      kind: 'table',
    },
    {
      title: 'System file handles',
      description: 'Allocated file handles, their peak, and fs.file-max.',
      unit: 'short',
      targets: [
        {
          expr: 'netpressure_fd_allocated{job=~"$job", instance=~"$instance"}',
          legend: 'allocated',
        },
        {
          expr: 'netpressure_fd_allocated_peak{job=~"$job", instance=~"$instance"}',
          legend: 'peak',
        },
        {
          expr: 'netpressure_fd_limit{job=~"$job", instance=~"$instance"}',
          legend: 'file-max',
        },
      ],
    },
    {
      title: 'Softnet drops and squeezes',
      description: 'Input packets dropped at netdev_max_backlog, and net_rx_action budget exhaustion, per second.',
      unit: 'pps',
      targets: [
        {
          expr: 'rate(netpressure_softnet_dropped_total{job=~"$job", instance=~"$instance"}[$__rate_interval])',
          legend: 'dropped',
        },
        {
          expr: 'rate(netpressure_softnet_times_squeezed_total{job=~"$job", instance=~"$instance"}[$__rate_interval])',
          legend: 'squeezed',
        },
      ],
    },
    {
      title: 'Tuning values',
      description: 'The sysctls that bound these pressures, as the exporter last read them.',
      unit: 'short',
      targets: [
        {
          expr: 'netpressure_sysctl{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '',
        },
      ],
      kind: 'table',
    },
  ],
  pod: [
    {
      title: 'Conntrack entries against the limit',
      description: "The pod's namespace: entries, peak over the window, and nf_conntrack_max (global, checked per namespace).",
      unit: 'short',
      targets: [
        {
          expr: 'netpressure_conntrack_entries{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{namespace}}/{{pod}} entries',
        },
        {
          expr: 'netpressure_conntrack_entries_peak{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{namespace}}/{{pod}} peak',
        },
        {
          expr: 'netpressure_conntrack_entries_limit{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{namespace}}/{{pod}} limit',
        },
      ],
    },
    {
      title: 'Conntrack drops and insert failures',
      description: "Per second in the pod's namespace.",
      unit: 'pps',
      targets: [
        {
          expr: 'sum by (namespace, pod) (rate(netpressure_conntrack_drop_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))',
          legend: '{{namespace}}/{{pod}} drop',
        },
        {
          expr: 'sum by (namespace, pod) (rate(netpressure_conntrack_insert_failed_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))',
          legend: '{{namespace}}/{{pod}} insert failed',
        },
      ],
    },
    {
      title: 'Drops by reason',
      description: "Packets the kernel dropped in the pod's namespace, per second, by drop reason (counted in the kernel by the drop_reasons collector). netfilter_drop: a full conntrack table (with conntrack drops) or a DROP rule; tcp_listen_overflow: a full accept queue; cpu_backlog: netdev_max_backlog; no_socket: nothing listening (or a syncookie ACK past a full accept queue).",
      unit: 'pps',
      targets: [
        {
          expr: 'sum by (namespace, pod, reason) (rate(netpressure_packet_drops_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval]))',
          legend: '{{namespace}}/{{pod}} {{reason}}',
        },
      ],
    },
    {
      title: "Who fills the pod's table",
      description: "When the pod's own table is over the breakdown threshold: its top sources and destinations.",
      unit: 'short',
      targets: [
        {
          expr: 'sort_desc(netpressure_conntrack_top_source_entries{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"})',
          legend: '',
        },
        {
          expr: 'sort_desc(netpressure_conntrack_top_destination_entries{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"})',
          legend: '',
        },
      ],
      kind: 'table',
    },
    {
      title: 'Listeners of the pod',
      description: "Accept queue, peak and limit of each listener in the pod's namespace.",
      unit: 'short',
      targets: [
        {
          expr: 'netpressure_tcp_listen_queue_length_peak{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '',
        },
        {
          expr: 'netpressure_tcp_listen_queue_limit{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '',
        },
      ],
      kind: 'table',
    },
    {
      title: 'TCP connections opened and failed',
      description: 'Active and passive opens and failed attempts per second.',
      unit: 'cps',
      targets: [
        {
          expr: 'rate(netpressure_tcp_active_opens_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval])',
          legend: '{{pod}} active',
        },
        {
          expr: 'rate(netpressure_tcp_passive_opens_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval])',
          legend: '{{pod}} passive',
        },
        {
          expr: 'rate(netpressure_tcp_attempt_fails_total{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}[$__rate_interval])',
          legend: '{{pod}} failed',
        },
      ],
    },
    {
      title: 'TIME_WAIT sockets',
      description: "TIME_WAIT sockets in the pod's namespace and their peak.",
      unit: 'short',
      targets: [
        {
          expr: 'netpressure_tcp_time_wait_sockets{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{pod}}',
        },
        {
          expr: 'netpressure_tcp_time_wait_sockets_peak{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '{{pod}} peak',
        },
      ],
    },
    {
      title: 'Destinations by local-port pressure',
      description: 'Sockets per destination holding an ephemeral port, by state. Empty while the pod holds fewer TCP sockets than 1/8 of its port range (the scan is skipped then).',
      unit: 'short',
      targets: [
        {
          expr: 'netpressure_tcp_remote_sockets{job=~"$job", instance=~"$instance", namespace=~"$namespace", pod=~"$pod"}',
          legend: '',
        },
      ],
      kind: 'table',
    },
  ],
}
