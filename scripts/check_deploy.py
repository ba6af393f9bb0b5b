#!/usr/bin/env python3
"""Validates deploy/ offline, as CI does (scripts/check-deploy.sh installs what it needs):

* every kustomize overlay renders (`kubectl kustomize`) and validates against the Kubernetes
  schemas of the oldest and newest versions we support (`kubernetes-validate --strict`);
* the Nomad job parses (python-hcl2), is a parameterized batch job whose token comes from Nomad
  Variables, and uses only `tailrace run` flags the binary has;
* the alert rules parse and their unit tests pass (`promtool check rules`, `promtool test
  rules`), and the scrape config is valid (`promtool check config`, with the Kubernetes service
  discovery swapped for a static target: Debian's promtool is built without it);
* the Grafana dashboard parses, every panel has a datasource and queries, and every query is
  valid PromQL (checked by promtool as recording rules).

Whether every metric they name is exported by a running server is tests/deploy.rs's job.

    scripts/check_deploy.py [--tailrace target/debug/tailrace] [--promtool PATH]
    scripts/check_deploy.py --render OVERLAY      # the overlay's objects as JSON (for tests)
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import hcl2
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
OVERLAYS = ["embedded", "aws", "gcp"]
# The oldest Kubernetes release still supported upstream when this was written, and the newest.
K8S_VERSIONS = ["1.32.0", "1.37.0"]


def render(overlay):
    """The objects `kubectl kustomize` renders for an overlay."""
    path = os.path.join(DEPLOY, "k8s", "overlays", overlay)
    out = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"kustomize could not render {overlay}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def check_kubernetes(validate_bin):
    for overlay in OVERLAYS:
        docs = render(overlay)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump_all(docs, f)
        for version in K8S_VERSIONS:
            out = subprocess.run([validate_bin, "--strict", "--quiet", "-k", version, f.name], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"overlay {overlay} does not validate against Kubernetes {version}:\n{out.stdout}{out.stderr}")
        kinds = sorted({d["kind"] for d in docs})
        deployments = [d for d in docs if d["kind"] == "Deployment"]
        for d in deployments:
            c = d["spec"]["template"]["spec"]["containers"][0]
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    sys.exit(f"{overlay}: Deployment {d['metadata']['name']} has no {probe}")
            if not c.get("securityContext", {}).get("readOnlyRootFilesystem"):
                sys.exit(f"{overlay}: Deployment {d['metadata']['name']} does not run with a read-only root filesystem")
        print(f"ok  k8s overlay {overlay}: {len(docs)} objects ({', '.join(kinds)}) valid for Kubernetes {' and '.join(K8S_VERSIONS)}")


def unquote(v):
    if isinstance(v, str) and len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1]
    return v


def one_block(blocks, what):
    if not isinstance(blocks, list) or len(blocks) != 1:
        sys.exit(f"nomad job: expected one {what} block")
    ((name, body),) = [(unquote(k), v) for k, v in blocks[0].items() if k != "__is_block__"]
    return name, body


def run_flags(tailrace):
    """Long flags `tailrace run` accepts, from its --help."""
    out = subprocess.run([tailrace, "run", "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", out, re.M))


def check_nomad(tailrace):
    path = os.path.join(DEPLOY, "nomad", "ci-step.nomad.hcl")
    with open(path) as f:
        spec = hcl2.load(f)
    name, job = one_block(spec.get("job"), "job")
    if unquote(job.get("type")) != "batch" or "parameterized" not in job:
        sys.exit("nomad job: a CI step is a parameterized batch job")
    required = [unquote(m) for m in job["parameterized"][0]["meta_required"]]
    _, group = one_block(job.get("group"), "group")
    _, task = one_block(group.get("task"), "task")
    config = task["config"][0]
    if unquote(config["command"]) != "/local/tailrace" or unquote(task["artifact"][0]["destination"]) != "local/tailrace":
        sys.exit("nomad job: the task must run the tailrace binary its artifact block fetches")
    args = [unquote(a) for a in config["args"]]
    if args[0] != "run" or "--" not in args:
        sys.exit("nomad job: the task must be `tailrace run … -- COMMAND`")
    known = run_flags(tailrace)
    used = [a for a in args[: args.index("--")] if a.startswith("--")]
    unknown = [a for a in used if a not in known]
    if unknown:
        sys.exit(f"nomad job: `tailrace run` has no flag {', '.join(unknown)}")
    for m in re.findall(r"NOMAD_META_(\w+)", " ".join(args)):
        if m not in required and m not in [unquote(x) for x in job["parameterized"][0].get("meta_optional", [])]:
            sys.exit(f"nomad job: NOMAD_META_{m} is used but not a dispatch meta key")
    template = task["template"][0]
    data = unquote(template["data"]) if isinstance(template["data"], str) else ""
    if "nomadVar" not in data or "TAILRACE_TOKEN=" not in data or template.get("env") is not True:
        sys.exit("nomad job: the token must come from Nomad Variables into TAILRACE_TOKEN")
    if not unquote(template["destination"]).startswith("secrets/"):
        sys.exit("nomad job: the token file belongs in secrets/")
    print(f"ok  nomad job {name}: parameterized batch, flags {' '.join(used)} known to `tailrace run`, token from Nomad Variables")


def check_prometheus(promtool):
    mon = os.path.join(DEPLOY, "monitoring")
    subprocess.run([promtool, "check", "rules", os.path.join(mon, "alerts.yml")], check=True, capture_output=True)
    out = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=mon, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"alert rule tests failed:\n{out.stdout}{out.stderr}")
    with open(os.path.join(mon, "prometheus.yml")) as f:
        cfg = yaml.safe_load(f)
    for job in cfg["scrape_configs"]:
        if "kubernetes_sd_configs" not in job:
            sys.exit(f"scrape job {job['job_name']}: expected Kubernetes service discovery")
        job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:8520"]}]
    cfg["rule_files"] = [os.path.join(mon, r) for r in cfg["rule_files"]]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(cfg, f)
    out = subprocess.run([promtool, "check", "config", f.name], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"prometheus.yml is not valid:\n{out.stdout}{out.stderr}")
    print("ok  prometheus: alerts.yml parses and its unit tests pass; prometheus.yml is valid")


def check_grafana(promtool):
    path = os.path.join(DEPLOY, "monitoring", "grafana-dashboard.json")
    with open(path) as f:
        dash = json.load(f)
    exprs = []
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        if not p.get("targets") or "datasource" not in p or "gridPos" not in p:
            sys.exit(f"dashboard panel {p.get('title')!r} lacks targets, a datasource or a position")
        exprs += [t["expr"] for t in p["targets"]]
    # Grafana's interval variables become a fixed range for the PromQL check.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e.replace("$__rate_interval", "5m").replace("$__interval", "1m")}
        for i, e in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(rules, f)
    out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"dashboard queries are not valid PromQL:\n{out.stdout}{out.stderr}")
    print(f"ok  grafana dashboard {dash['title']!r}: {len(dash['panels'])} panels, {len(exprs)} queries valid PromQL")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--render", metavar="OVERLAY", help="print the overlay's rendered objects as JSON and exit")
    ap.add_argument("--tailrace", default=os.path.join(ROOT, "target", "debug", "tailrace"))
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--kubernetes-validate", default="kubernetes-validate")
    a = ap.parse_args()
    if a.render:
        json.dump(render(a.render), sys.stdout)
        return
    check_kubernetes(a.kubernetes_validate)
    check_nomad(a.tailrace)
    check_prometheus(a.promtool)
    check_grafana(a.promtool)


if __name__ == "__main__":
    main()
