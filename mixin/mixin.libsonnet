// netpressure_exporter's monitoring mixin: _config, prometheusAlerts (and, to come,
// prometheusRules and grafanaDashboards), in the layout of the monitoring-mixins
// guidelines. alerts/generate.py renders the committed rule files from it.
(import 'config.libsonnet') + (import 'alerts.libsonnet')
