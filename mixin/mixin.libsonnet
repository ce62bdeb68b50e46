// netpressure_exporter's monitoring mixin: _config, prometheusRules, prometheusAlerts and
// grafanaDashboards, in the layout of the monitoring-mixins guidelines.
// alerts/generate.py and dashboards/generate.py render the committed files from it.
(import 'config.libsonnet')
+ (import 'rules.libsonnet')
+ (import 'alerts.libsonnet')
+ (import 'dashboards.libsonnet')
