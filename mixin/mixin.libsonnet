// netpressure_exporter's monitoring mixin: _config, prometheusRules, prometheusAlerts and
// grafanaDashboards, in the layout of the monitoring-mixins guidelines.
// mixin/render.py renders the committed rule files and dashboards from it.
(import 'config.libsonnet')
+ (import 'rules.libsonnet')
+ (import 'alerts.libsonnet')
+ (import 'dashboards.libsonnet')
