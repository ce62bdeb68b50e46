#!/usr/bin/env python3
"""Checks deploy/kubernetes offline: every built-in kind against the Kubernetes schemas
(kubernetes-validate, strict: unknown fields fail), and what no schema checks: the
kustomization lists every manifest, the ServiceMonitor keeps the exporter's pod labels
and scrapes the Service's port, and the DaemonSet keeps the properties the README
promises. A deliberately broken copy must fail, so the validator is known to bite.

Usage: scripts/validate-manifests.py  (needs kubernetes-validate and PyYAML)
"""
import pathlib
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
BUILTIN = ["namespace.yaml", "serviceaccount.yaml", "daemonset.yaml", "service.yaml"]


def validate(paths):
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", *map(str, paths)],
        capture_output=True,
        text=True,
    )


def load(name):
    return yaml.safe_load((ROOT / name).read_text())


def load_overlay_image(overlay):
    img = yaml.safe_load((overlay / "kustomization.yaml").read_text())["images"][0]
    return f"{img['newName']}:{img['newTag']}"


def check_tls_overlay(failures):
    """Renders deploy/overlays/tls and checks that the pieces fit: the built-in objects
    validate; the DaemonSet reads the web config from the Secret and probes over HTTPS;
    the web config is accepted by both the toolkit's own checker (promtool check
    web-config) and this exporter, with certificates made here by openssl; its bcrypt
    hash matches the password the ServiceMonitor sends (htpasswd -v); the ServiceMonitor
    scrapes over HTTPS for the name the example Certificate issues. Returns the number
    of checks made."""
    import base64
    import os
    import re
    import signal

    overlay = ROOT.parent / "overlays" / "tls"
    r = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True)
    if r.returncode != 0:
        failures.append(f"kubectl kustomize {overlay} failed: {r.stderr.strip()}")
        return 1
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    by = lambda kind, name=None: [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    builtin = [d for d in docs if d["kind"] in ("Namespace", "ServiceAccount", "DaemonSet", "Service", "Secret")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        paths = []
        for i, d in enumerate(builtin):
            p = tmp / f"{i}.yaml"
            p.write_text(yaml.safe_dump(d))
            paths.append(p)
        v = validate(paths)
        if v.returncode != 0 or len(builtin) != 6:
            failures.append(f"rendered {overlay}: {len(builtin)} built-in objects, validation:\n{v.stdout}{v.stderr}")

        pod = by("DaemonSet")[0]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        secret_of = lambda path: volumes.get(mounts.get(path, {}).get("name"), {}).get("secret", {}).get("secretName")
        wiring = {
            "args name the mounted web config": "--web.config.file=/etc/netpressure/web/web-config.yml" in c["args"],
            "web config mounted read-only from its Secret": secret_of("/etc/netpressure/web") == "netpressure-web-config"
            and mounts["/etc/netpressure/web"].get("readOnly") is True,
            "TLS Secret mounted read-only": secret_of("/etc/netpressure/tls") == "netpressure-exporter-tls"
            and mounts["/etc/netpressure/tls"].get("readOnly") is True,
            "probes over HTTPS": c["livenessProbe"]["httpGet"].get("scheme") == "HTTPS"
            and c["readinessProbe"]["httpGet"].get("scheme") == "HTTPS",
        }
        failures += [f"tls overlay: {k}" for k, ok in wiring.items() if not ok]

        # The web config as the pod sees it, its certificate paths pointed at files
        # made here.
        text = base64.b64decode(by("Secret", "netpressure-web-config")[0]["data"]["web-config.yml"]).decode()
        web = yaml.safe_load(text)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(tmp / "tls.key"), "-out", str(tmp / "tls.crt"), "-days", "1", "-subj", "/CN=netpressure-exporter.netpressure.svc"],
            check=True, capture_output=True,
        )
        local = tmp / "web-config.yml"
        local.write_text(text.replace("/etc/netpressure/tls/", f"{tmp}/"))
        p = subprocess.run(["promtool", "check", "web-config", str(local)], capture_output=True, text=True)
        if p.returncode != 0:
            failures.append(f"tls overlay: promtool check web-config refuses the web config: {p.stdout}{p.stderr}")
        exporter = ROOT.parent.parent / "target" / "debug" / "netpressure_exporter"
        proc = subprocess.Popen(
            [str(exporter), "--web.listen-address=127.0.0.1:0", "--no-collector.netns", f"--web.config.file={local}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        log = ""
        for line in proc.stderr:
            log += line
            if "listening on" in line or "level=error" in line:
                break
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        if "listening on 127.0.0.1" not in log or "(HTTPS)" not in log:
            failures.append(f"tls overlay: the exporter does not start with the web config: {log}")

        # The hash in the web config matches the password Prometheus sends.
        creds = by("Secret", "netpressure-scrape-credentials")[0]["stringData"]
        users = web.get("basic_auth_users") or {}
        htfile = tmp / "htpasswd"
        htfile.write_text("".join(f"{u}:{h}\n" for u, h in users.items()))
        h = subprocess.run(["htpasswd", "-vb", str(htfile), creds["username"], creds["password"]], capture_output=True, text=True)
        if h.returncode != 0:
            failures.append(f"tls overlay: the scrape credentials do not match basic_auth_users: {h.stderr.strip()}")

    ep = by("ServiceMonitor")[0]["spec"]["endpoints"][0]
    cert = yaml.safe_load((overlay / "certificate.yaml").read_text())
    auth = ep.get("basicAuth", {})
    monitor = {
        "ServiceMonitor scrapes https": ep.get("scheme") == "https",
        "ServiceMonitor checks the name the Certificate issues": ep.get("tlsConfig", {}).get("serverName")
        in cert["spec"]["dnsNames"],
        "ServiceMonitor trusts the CA of the TLS Secret": ep.get("tlsConfig", {}).get("ca", {}).get("secret", {}).get("name")
        == cert["spec"]["secretName"],
        "ServiceMonitor's basicAuth reads the credentials Secret": {auth.get("username", {}).get("name"), auth.get("password", {}).get("name")}
        == {"netpressure-scrape-credentials"},
    }
    failures += [f"tls overlay: {k}" for k, ok in monitor.items() if not ok]
    return 1 + len(wiring) + 3 + len(monitor)


def main():
    failures = []
    r = validate([ROOT / n for n in BUILTIN])
    if r.returncode != 0:
        failures.append("schema validation failed:\n" + r.stdout + r.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        broken = pathlib.Path(tmp) / "broken.yaml"
        broken.write_text((ROOT / "daemonset.yaml").read_text().replace("hostNetwork:", "hostNetwrk:"))
        if validate([broken]).returncode == 0:
            failures.append("a DaemonSet with an unknown field passed validation: the validator is not checking")

    kust = load("kustomization.yaml")
    listed = set(kust["resources"])
    present = {p.name for p in ROOT.glob("*.yaml")} - {"kustomization.yaml"}
    if listed != present:
        failures.append(f"kustomization resources {sorted(listed)} != manifests {sorted(present)}")

    svc, sm, ds = load("service.yaml"), load("servicemonitor.yaml"), load("daemonset.yaml")
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        if ep.get("honorLabels") is not True:
            failures.append("ServiceMonitor endpoint without honorLabels: true (namespace/pod would be renamed)")
        if ep.get("port") not in svc_ports:
            failures.append(f"ServiceMonitor scrapes port {ep.get('port')!r}, the Service has {sorted(svc_ports)}")
    # The job the shipped rules select (the mixin's default selector): the Operator
    # would otherwise name the job after the Service.
    default_job = 'job="netpressure"'
    mixin_cfg = (ROOT.parent.parent / "mixin" / "config.libsonnet").read_text()
    if f"selector: '{default_job}'" not in mixin_cfg:
        failures.append(f"the mixin's default selector is not {default_job}")
    for ep in sm["spec"]["endpoints"]:
        if {"targetLabel": "job", "replacement": "netpressure"} not in ep.get("relabelings", []):
            failures.append("ServiceMonitor does not set job=netpressure, which the rules select")
    if sm["spec"]["selector"]["matchLabels"] != svc["metadata"]["labels"]:
        failures.append("ServiceMonitor selector does not match the Service's labels")

    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sc = c["securityContext"]
    checks = {
        "hostNetwork": pod.get("hostNetwork") is True,
        "hostPID": pod.get("hostPID") is True,
        "tolerates every taint": {"operator": "Exists"} in pod.get("tolerations", []),
        "read-only root filesystem": sc.get("readOnlyRootFilesystem") is True,
        "drops all capabilities": sc["capabilities"]["drop"] == ["ALL"],
        "adds only NET_ADMIN, SYS_ADMIN, SYS_PTRACE": sorted(sc["capabilities"]["add"])
        == ["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"],
        "liveness on /-/healthy": c["livenessProbe"]["httpGet"]["path"] == "/-/healthy",
        "readiness on /-/ready": c["readinessProbe"]["httpGet"]["path"] == "/-/ready",
        "requests and limits": {"requests", "limits"} <= set(c["resources"]),
        "/proc read-only": any(m["mountPath"] == "/host/proc" and m.get("readOnly") for m in c["volumeMounts"]),
        "/var/log/pods read-only": any(
            m["mountPath"] == "/host/var/log/pods" and m.get("readOnly") for m in c["volumeMounts"]
        ),
        "flags point at the mounts": {"--path.procfs=/host/proc", "--path.pod-logs=/host/var/log/pods"}
        <= set(c["args"]),
    }
    failures += [f"DaemonSet: {name}" for name, ok in checks.items() if not ok]

    # What users apply: `kubectl kustomize` renders the base and the custom-image
    # overlay, and the rendered built-in objects pass the same strict validation.
    rendered_checks = 0
    overlay = ROOT.parent / "overlays" / "custom-image"
    host_ip = ROOT.parent / "overlays" / "host-ip"
    podmonitor = ROOT.parent / "overlays" / "podmonitor"
    for target in (ROOT, overlay, host_ip, podmonitor):
        rendered_checks += 2
        r = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True, text=True)
        if r.returncode != 0:
            failures.append(f"kubectl kustomize {target} failed: {r.stderr.strip()}")
            continue
        docs = [d for d in yaml.safe_load_all(r.stdout) if d]
        builtin = [d for d in docs if d["kind"] in ("Namespace", "ServiceAccount", "DaemonSet", "Service")]
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, d in enumerate(builtin):
                p = pathlib.Path(tmp) / f"{i}.yaml"
                p.write_text(yaml.safe_dump(d))
                paths.append(p)
            v = validate(paths)
            if v.returncode != 0 or len(builtin) != 4:
                failures.append(f"rendered {target}: {len(builtin)} built-in objects, validation:\n{v.stdout}{v.stderr}")
        if target == host_ip:
            rendered_checks += 1
            c = [d for d in docs if d["kind"] == "DaemonSet"][0]["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c.get("env", [])}
            if c["args"][0] != "--web.listen-address=$(HOST_IP):9861" or env.get("HOST_IP") != "status.hostIP":
                failures.append(f"the host-ip overlay renders args {c['args']} and env {env}")
        if target == podmonitor:
            rendered_checks += 4
            pms = [d for d in docs if d["kind"] == "PodMonitor"]
            if [d["kind"] for d in docs if d["kind"] == "ServiceMonitor"] or len(pms) != 1:
                failures.append(f"the podmonitor overlay renders {[d['kind'] for d in docs]}: one PodMonitor, no ServiceMonitor")
            else:
                ds_r = [d for d in docs if d["kind"] == "DaemonSet"][0]
                tmpl = ds_r["spec"]["template"]
                port_names = {p["name"] for c in tmpl["spec"]["containers"] for p in c.get("ports", [])}
                eps = pms[0]["spec"]["podMetricsEndpoints"]
                if any({"targetLabel": "job", "replacement": "netpressure"} not in ep.get("relabelings", []) for ep in eps):
                    failures.append("PodMonitor does not set job=netpressure, which the rules select")
                if any(ep.get("honorLabels") is not True for ep in eps):
                    failures.append("PodMonitor endpoint without honorLabels: true (namespace/pod would be renamed)")
                if any(ep.get("port") not in port_names for ep in eps):
                    failures.append(f"PodMonitor scrapes ports {[ep.get('port') for ep in eps]}, the pods have {sorted(port_names)}")
                if pms[0]["spec"]["selector"]["matchLabels"].items() - tmpl["metadata"]["labels"].items():
                    failures.append("PodMonitor selector does not match the DaemonSet's pod labels")
                if pms[0]["metadata"]["namespace"] != ds_r["metadata"]["namespace"]:
                    failures.append("PodMonitor is not in the DaemonSet's namespace")
        if target == overlay:
            want = load_overlay_image(overlay)
            images = [c["image"] for d in docs if d["kind"] == "DaemonSet" for c in d["spec"]["template"]["spec"]["containers"]]
            if images != [want]:
                failures.append(f"the custom-image overlay renders {images}, not [{want!r}]")

    rendered_checks += check_tls_overlay(failures)

    # The NetworkPolicy example is a valid object too.
    rendered_checks += 1
    v = validate([ROOT.parent / "examples" / "networkpolicy.yaml"])
    if v.returncode != 0:
        failures.append("deploy/examples/networkpolicy.yaml: " + v.stdout + v.stderr)

    for f in failures:
        print("FAIL", f)
    total = 3 + len(sm["spec"]["endpoints"]) * 2 + 1 + len(checks) + rendered_checks
    print(f"manifests: {total - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
