#!/usr/bin/env python3
"""Renders the Grafana dashboards (fleet.json, node.json, pod.json) from the monitoring
mixin's grafanaDashboards (mixin/dashboards.libsonnet, panels in mixin/panels.libsonnet),
with jsonnet. `--check` fails when the committed files differ from what this writes;
`--config` merges a JSON object into the mixin's _config and `--out DIR` writes there
instead (for another job selector, uid prefix, tags or refresh).
"""
import argparse
import json
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def render(config):
    code = f"((import 'mixin/mixin.libsonnet') + {{ _config+:: {json.dumps(config)} }}).grafanaDashboards"
    r = subprocess.run(["jsonnet", "-J", str(ROOT), "-e", code], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"jsonnet failed: {r.stderr.strip()}")
    return {name: json.dumps(d, indent=2) + "\n" for name, d in json.loads(r.stdout).items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="{}", help="JSON object merged into the mixin's _config")
    ap.add_argument("--out", type=pathlib.Path, default=HERE, help="directory to write to (default: dashboards/)")
    ap.add_argument("--check", action="store_true", help="fail if the committed files are out of date")
    args = ap.parse_args()
    files = render(json.loads(args.config))
    if args.check:
        stale = [n for n, text in files.items() if not (HERE / n).exists() or (HERE / n).read_text() != text]
        for n in stale:
            print(f"dashboards/{n} is out of date: run dashboards/generate.py", file=sys.stderr)
        print(f"generated dashboards: {len(files) - len(stale)} passed, {len(stale)} failed")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
