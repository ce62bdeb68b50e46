// Recording rules for fleet views: large fleets query these, not every pod's raw series.
// Each keeps job and instance (and the cluster label, where the fleet has one), so that
// dashboards and alerts can still say which node.
{
  prometheusRules+:: {
    groups+: [
      {
        name: 'netpressure-fleet',
        rules: [
          {
            // Each namespace's table at its peak over the window, against its limit.
            record: 'netpressure:conntrack_fill:ratio',
            expr: |||
              netpressure_conntrack_entries_peak{%(selector)s} / (netpressure_conntrack_entries_limit{%(selector)s} > 0)
            ||| % $._config,
          },
          {
            // The fullest table of each node.
            record: 'netpressure:conntrack_fill:max_by_instance',
            expr: |||
              max by (job, %(clusterLabel)s, instance) (netpressure:conntrack_fill:ratio)
            ||| % $._config,
          },
          {
            // The fullest table of the cluster.
            record: 'netpressure:conntrack_fill:max',
            expr: |||
              max by (job, %(clusterLabel)s) (netpressure:conntrack_fill:ratio)
            ||| % $._config,
          },
          {
            // Per pod (a pod's namespace has one table): the fleet's top pods are a topk
            // over this.
            record: 'netpressure:pod_conntrack_fill:ratio',
            expr: |||
              max by (job, %(clusterLabel)s, instance, namespace, pod) (netpressure:conntrack_fill:ratio{pod!=""})
            ||| % $._config,
          },
          {
            // Packets dropped because a table was full, per second, per namespace.
            record: 'netpressure:conntrack_drops:rate5m',
            expr: |||
              sum without (cpu) (rate(netpressure_conntrack_drop_total{%(selector)s}[5m]))
            ||| % $._config,
          },
          {
            // The kernel's drops by reason, per pod and per node.
            record: 'netpressure:packet_drops:rate5m',
            expr: |||
              sum by (job, %(clusterLabel)s, instance, namespace, pod, reason) (rate(netpressure_packet_drops_total{%(selector)s}[5m]))
            ||| % $._config,
          },
          {
            record: 'netpressure:packet_drops_by_instance:rate5m',
            expr: |||
              sum by (job, %(clusterLabel)s, instance, reason) (netpressure:packet_drops:rate5m)
            ||| % $._config,
          },
          {
            // Seconds until each table is full at its growth over the forecast window (a
            // least-squares slope, deriv(): as predict_linear does, and as steady against
            // one spike). Only for tables that grow. 30 minutes by default: longer than a
            // load test's ramp or a deployment's rollout, which a slope over minutes would
            // project to a false "full in an hour"; short enough to see a leak of
            // connections within the hour it matters.
            record: 'netpressure:conntrack_time_to_full:seconds',
            expr: |||
              (
                netpressure_conntrack_entries_limit{%(selector)s} - netpressure_conntrack_entries{%(selector)s}
              )
              / (deriv(netpressure_conntrack_entries{%(selector)s}[%(conntrackForecastWindow)s]) > 0)
            ||| % $._config,
          },
        ],
      },
    ],
  },
}
