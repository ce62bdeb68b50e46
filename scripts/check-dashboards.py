#!/usr/bin/env python3
"""Checks every dashboard in dashboards/ against the project's conventions (FIELD-GUIDE
"The bar for alerts and dashboards") and every alert's runbook link against docs/.

Usage: scripts/check-dashboards.py
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
failures = []
checks = 0


def check(ok, what):
    global checks
    checks += 1
    if not ok:
        failures.append(what)


def counter_outside_rate(expr):
    """Names of _total series used outside rate()/irate()/increase()."""
    bad = []
    for m in re.finditer(r"netpressure_\w+_total", expr):
        depth, i = 0, m.start() - 1
        # Walk back to the "(" that opens the call this series sits in.
        while i >= 0:
            c = expr[i]
            if c == ")":
                depth += 1
            elif c == "(":
                if depth == 0:
                    break
                depth -= 1
            i -= 1
        fn = re.search(r"(\w+)\s*$", expr[:i]) if i >= 0 else None
        if not fn or fn.group(1) not in ("rate", "irate", "increase"):
            bad.append(m.group(0))
    return bad


# The check must bite: known good and bad expressions first.
assert counter_outside_rate('sum(rate(netpressure_a_total{x="1"}[5m]))') == []
assert counter_outside_rate("increase(netpressure_a_total[1h]) > 0") == []
assert counter_outside_rate("netpressure_a_total") == ["netpressure_a_total"]
assert counter_outside_rate("sum by (x) (netpressure_a_total)") == ["netpressure_a_total"]

for path in sorted((ROOT / "dashboards").glob("*.json")):
    name = path.name
    d = json.loads(path.read_text())
    check("__inputs" not in d, f"{name}: has __inputs (breaks file provisioning)")
    check(re.fullmatch(r"[a-z0-9-]{1,40}", d.get("uid", "")) is not None, f"{name}: no stable uid")
    vars_ = {v["name"]: v for v in d["templating"]["list"]}
    check(vars_.get("datasource", {}).get("type") == "datasource", f"{name}: no `datasource` variable")
    for v in ("job", "instance", "namespace", "pod"):
        var = vars_.get(v, {})
        check(var.get("multi") is True and var.get("includeAll") is True, f"{name}: variable {v} missing or not multi")
    for p in d["panels"]:
        title = f"{name}: panel {p['title']!r}"
        check(bool(p.get("description")), f"{title}: no description")
        check(bool(p.get("fieldConfig", {}).get("defaults", {}).get("unit")), f"{title}: no unit")
        check(p.get("datasource", {}).get("uid") == "${datasource}", f"{title}: not on the datasource variable")
        for t in p["targets"]:
            e = t["expr"]
            check('job=~"$job"' in e and 'instance=~"$instance"' in e, f"{title}: no =~ job/instance matchers: {e}")
            check(not counter_outside_rate(e), f"{title}: counter outside rate/increase: {counter_outside_rate(e)}")
            for window in re.findall(r"\[([^\]]+)\]", e):
                check(window == "$__rate_interval", f"{title}: range [{window}] instead of [$__rate_interval]")

rules = (ROOT / "alerts" / "netpressure.rules.yml").read_text()
for runbook in sorted(set(re.findall(r"docs/runbooks/(\w+\.md)", rules))):
    check((ROOT / "docs" / "runbooks" / runbook).exists(), f"runbook docs/runbooks/{runbook} missing")
for alert in sorted(set(re.findall(r"alert: \"?(\w+)", rules))):
    check(f"docs/runbooks/{alert}.md" in rules, f"alert {alert} has no runbook_url to its own runbook")

for f in failures:
    print("FAIL", f)
print(f"dashboards and runbooks: {checks - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
