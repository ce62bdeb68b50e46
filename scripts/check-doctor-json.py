#!/usr/bin/env python3
"""Runs `netpressure_exporter doctor --format json` on this node and validates its
output against docs/doctor.schema.json (jsonschema, from target/manifest-venv); a copy
with an unknown field and one with an unknown check id must fail, so the schema is
known to bite. Usage: scripts/check-doctor-json.py [EXPORTER]"""
import json
import pathlib
import subprocess
import sys

import jsonschema

ROOT = pathlib.Path(__file__).resolve().parent.parent
exporter = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "debug" / "netpressure_exporter")
schema = json.loads((ROOT / "docs" / "doctor.schema.json").read_text())
out = subprocess.run([exporter, "doctor", "--format", "json", "--duration", "1s"], capture_output=True, text=True)
failures = []
if out.returncode not in (0, 1):
    failures.append(f"doctor exited {out.returncode}: {out.stderr}")
else:
    doc = json.loads(out.stdout)
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as e:
        failures.append(f"doctor's JSON does not match the schema: {e.message}")
    if doc["critical"] != (out.returncode == 1):
        failures.append(f"critical={doc['critical']} but exit status {out.returncode}")
    for broken in ({**doc, "extra": 1}, {**doc, "findings": [{**doc["findings"][0], "check": "no-such-check"}]}):
        try:
            jsonschema.validate(broken, schema)
            failures.append("a broken copy passed the schema: it is not checking")
        except jsonschema.ValidationError:
            pass
for f in failures:
    print("FAIL", f)
print(f"doctor json: {4 - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
