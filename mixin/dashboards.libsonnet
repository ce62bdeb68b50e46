// The Grafana dashboards (fleet, node, pod), as plain jsonnet objects (no grafonnet: Debian
// has none, and nothing is fetched). Every panel follows the same conventions: the
// `datasource` variable, multi-value `job`/`instance`/`namespace`/`pod` variables matched
// with `=~`, `$__rate_interval`, a unit and a description, counters only inside
// rate()/increase(), stable uids (_config.dashboardUIDPrefix), no `__inputs`.
// scripts/check-dashboards.py checks each rendered file.
local panels = import 'panels.libsonnet';

local datasource = { type: 'prometheus', uid: '${datasource}' };

local varQuery(name, query, label, allValue='.+') = {
  name: name,
  label: label,
  type: 'query',
  datasource: datasource,
  query: { query: query, refId: name + '-var' },
  definition: query,
  refresh: 2,
  multi: true,
  includeAll: true,
  allValue: allValue,
  current: { selected: true, text: ['All'], value: ['$__all'] },
  sort: 1,
};

local variables(cfg) = [
  { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', current: {} },
  varQuery('job', 'label_values(netpressure_build_info{%(selector)s}, job)' % cfg, 'Job'),
  varQuery('instance', 'label_values(netpressure_build_info{job=~"$job"}, instance)', 'Instance'),
  // Series of namespaces outside any pod have no namespace/pod labels: "All" must match
  // them too, hence .* rather than .+.
  varQuery('namespace', 'label_values(netpressure_conntrack_entries{job=~"$job", instance=~"$instance"}, namespace)', 'Namespace', '.*'),
  varQuery('pod', 'label_values(netpressure_conntrack_entries{job=~"$job", instance=~"$instance", namespace=~"$namespace"}, pod)', 'Pod', '.*'),
];

local panel(id, p, x, y) =
  local kind = std.get(p, 'kind', 'timeseries');
  {
    id: id,
    type: kind,
    title: p.title,
    description: p.description,
    datasource: datasource,
    gridPos: { h: 8, w: if kind == 'table' then 24 else 12, x: x, y: y },
    fieldConfig: { defaults: { unit: p.unit }, overrides: [] },
    options: if kind == 'table' then { showHeader: true } else {},
    targets: [
      {
        refId: std.char(std.codepoint('A') + i),
        datasource: datasource,
        expr: p.targets[i].expr,
        legendFormat: p.targets[i].legend,
      } + (if kind == 'table' then { format: 'table', instant: true } else { range: true })
      for i in std.range(0, std.length(p.targets) - 1)
    ],
  };

// Two timeseries panels a row; a table takes a row of its own.
local layout(list) =
  std.foldl(
    function(acc, p)
      local w = if std.get(p, 'kind', 'timeseries') == 'table' then 24 else 12;
      local start = if acc.x + w > 24 then { x: 0, y: acc.y + 8 } else { x: acc.x, y: acc.y };
      local next = if start.x + w >= 24 then { x: 0, y: start.y + 8 } else { x: start.x + w, y: start.y };
      { x: next.x, y: next.y, out: acc.out + [panel(std.length(acc.out) + 1, p, start.x, start.y)] },
    list,
    { x: 0, y: 0, out: [] },
  ).out;

local dashboard(cfg, name, title, description, list) = {
  uid: cfg.dashboardUIDPrefix + name,
  title: title,
  description: description,
  tags: cfg.dashboardTags,
  timezone: 'browser',
  schemaVersion: 39,
  version: 1,
  editable: true,
  refresh: cfg.dashboardRefresh,
  time: { from: 'now-6h', to: 'now' },
  templating: { list: variables(cfg) },
  annotations: { list: [] },
  links: [],
  panels: layout(list),
};

{
  grafanaDashboards+:: {
    'fleet.json': dashboard($._config, 'fleet', 'Netpressure / Fleet', 'Which nodes and pods are closest to dropping connections.', panels.fleet),
    'node.json': dashboard($._config, 'node', 'Netpressure / Node', 'One node: conntrack, listeners, TIME_WAIT and ports, file descriptors, softnet.', panels.node),
    'pod.json': dashboard($._config, 'pod', 'Netpressure / Pod', "One pod's network namespace: conntrack, listeners, connections, ports.", panels.pod),
  },
}
