// netpressure_exporter's monitoring mixin: _config, prometheusRules, prometheusAlerts (and, to
// come, grafanaDashboards), in the layout of the monitoring-mixins
// guidelines. alerts/generate.py renders the committed rule files from it.
(import 'config.libsonnet') + (import 'rules.libsonnet') + (import 'alerts.libsonnet')
