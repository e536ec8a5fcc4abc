"""What the Deployment promises, beyond its schema: the pod's grace period
covers the worker's own stop limit, the probes ask the worker's health
endpoints on the port it serves them, and the credentials come from a
Secret. Usage: python3 check.py ALL.yaml (kubectl kustomize's output)."""

import re
import sys

import yaml


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", text)
    if not m:
        sys.exit(f"error: cannot read the duration {text!r}")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n / 1000, "s": n, "m": 60 * n}[unit]


def flag(args, name, default):
    return args[args.index(name) + 1] if name in args else default


docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
deployments = [d for d in docs if d["kind"] == "Deployment"]
assert len(deployments) == 1, "one Deployment"
pod = deployments[0]["spec"]["template"]["spec"]
(worker,) = pod["containers"]
args = [str(a) for a in worker["args"]]

# grace + request timeout + 1 s (the core's stop limit), the delete's own
# timeout (5 s), a command's SIGTERM -> SIGKILL (2 s).
limit = seconds(flag(args, "--grace", "30s")) + seconds(flag(args, "--request-timeout", "10s")) + 1 + 5 + 2
period = pod["terminationGracePeriodSeconds"]
if not period > limit:
    sys.exit(f"error: terminationGracePeriodSeconds {period} is not above the worker's stop limit {limit:g} s")

port = int(flag(args, "--metrics-addr", ":0").rsplit(":", 1)[1])
ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
    get = worker[probe]["httpGet"]
    if get["path"] != path:
        sys.exit(f"error: {probe} asks {get['path']}, not {path}")
    if ports.get(get["port"], get["port"]) != port:
        sys.exit(f"error: {probe} asks port {get['port']}, the worker serves {port}")
if "preStop" in worker.get("lifecycle", {}):
    sys.exit("error: no preStop: SIGTERM starts the graceful stop")
secrets = [e for e in worker["env"] if "valueFrom" in e]
assert all("secretKeyRef" in e["valueFrom"] for e in secrets)
assert any(v.get("secret") for v in pod["volumes"]), "the password from a Secret"
assert "--password-file" in args and "ZNDRAW_PASSWORD" not in {e["name"] for e in worker["env"]}
print(f"kubernetes: stop limit {limit:g} s < terminationGracePeriodSeconds {period}; probes on :{port}")
