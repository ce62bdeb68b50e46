// What a user of the mixin sets: selectors, thresholds and durations, the runbook URL.
// Override with `(import 'mixin.libsonnet') + { _config+:: { ... } }`.
{
  _config+:: {
    // The PromQL label matchers that select the exporter's series, in every rule and
    // dashboard query.
    selector: 'job="netpressure"',
    // The label that names a cluster in a fleet's Prometheus (the recording rules keep
    // it; absent labels are simply empty).
    clusterLabel: 'cluster',
    // Where each alert's runbook lives; %s is the alert's name.
    runbookURLPattern: 'https://github.com/netpressure/netpressure_exporter/blob/main/docs/runbooks/%s.md',

    // A conntrack table's peak over its limit (the exporter's _peak sees spikes between
    // scrapes).
    conntrackFillingWarning: 0.80,
    conntrackFillingWarningFor: '5m',
    conntrackFillingCritical: 0.95,
    conntrackFillingCriticalFor: '2m',
    // Full within the horizon at the growth of the window, already over the minimum fill.
    conntrackForecastWindow: '30m',
    conntrackForecastHorizonSeconds: 3600,
    conntrackForecastMinFill: 0.5,
    conntrackForecastFor: '10m',
    insertFailedFor: '5m',

    listenOverflowFor: '1m',
    synBacklogWarning: 0.8,
    synBacklogFor: '2m',
    localPortsWarning: 0.8,
    localPortsWarningFor: '5m',
    localPortsCritical: 0.95,
    localPortsCriticalFor: '2m',
    timeWaitWarning: 0.8,
    timeWaitFor: '5m',
    softnetDropsFor: '10m',

    fdWarning: 0.8,
    fdWarningFor: '5m',
    fdCritical: 0.95,
    fdCriticalFor: '2m',
    podFdWarning: 0.8,
    podFdWarningFor: '5m',

    // Sustained drops for the kernel's reason of a limit.
    dropsFor: '5m',

    sourceDownFor: '15m',
    webConfigReloadFor: '10m',
    exporterDownFor: '5m',

    // The dashboards: uids are this prefix and fleet, node, pod.
    dashboardUIDPrefix: 'netpressure-',
    dashboardTags: ['netpressure', 'conntrack', 'network'],
    dashboardRefresh: '30s',
  },
}
