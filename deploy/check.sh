#!/usr/bin/env bash
# Checks the deployment recipes where the tools exist: the systemd units with
# `systemd-analyze verify` (against a built outage-worker), the container
# recipe with `docker build` when a Docker daemon answers, the Kubernetes
# manifests offline (`kubectl kustomize`, then `kubernetes-validate --strict`
# against the API schemas, then deploy/kubernetes/check.py). Prints what it
# could not check; OUTAGE_REQUIRE_K8S=1 makes missing Kubernetes tools an
# error. Usage: bash deploy/check.sh [path/to/outage-worker]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${1:-target/debug/outage-worker}
[ -x "$bin" ] || cargo build --quiet -p outage-runtime-std --features cli --bin outage-worker
bin=$(realpath "$bin")

# What the units promise, whatever the host has.
for unit in deploy/outage-worker.service 'deploy/outage-worker@.service'; do
    for want in 'KillMode=mixed' 'Restart=on-failure' 'RestartPreventExitStatus=2 3 5' 'KillSignal=SIGTERM' \
        'Type=notify' 'NotifyAccess=main' 'WatchdogSec=30' 'TimeoutStopSec=60'; do
        grep -qx "$want" "$unit" || { echo "error: $unit lacks $want" >&2; exit 1; }
    done
    grep -q '^LoadCredential=password:' "$unit" || { echo "error: $unit loads no password credential" >&2; exit 1; }
done

if command -v systemd-analyze >/dev/null; then
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    for unit in outage-worker.service 'outage-worker@.service'; do
        sed -e "s|/usr/local/bin/outage-worker|$bin|" \
            -e "s|/etc/outage-worker/|$dir/|" "deploy/$unit" > "$dir/$unit"
    done
    cp deploy/worker.env.example "$dir/worker.env"
    cp deploy/worker.env.example "$dir/one.env"
    echo change-me > "$dir/password"
    echo change-me > "$dir/one.password"
    ln -s "$dir/outage-worker@.service" "$dir/outage-worker@one.service"
    # verify prints problems and exits non-zero on errors.
    out=$(cd "$dir" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no \
        ./outage-worker.service ./outage-worker@one.service 2>&1) || { echo "$out" >&2; exit 1; }
    # Messages about the host (no D-Bus, no running systemd) are not the units'.
    if echo "$out" | grep -v -i -e 'dbus' -e 'bus' -e 'Failed to connect' -e '^$' | grep -i -e 'outage-worker' >&2; then
        exit 1
    fi
    echo "systemd units: verified with systemd-analyze"
else
    echo "systemd units: systemd-analyze not found, checked the required settings only"
fi

# The image's command line must be one the binary accepts; it runs under
# tini and builds the command line.
"$bin" --help >/dev/null
grep -q 'ENTRYPOINT \["/usr/bin/tini", "--", "/usr/local/bin/outage-worker"\]' deploy/Containerfile \
    || { echo "error: the image does not run the worker under tini" >&2; exit 1; }
grep -q -- '--features cli --bin outage-worker' deploy/Containerfile \
    || { echo "error: the image does not build the command line (--features cli)" >&2; exit 1; }
if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
    docker build -q -f deploy/Containerfile -t outage-worker:check . >/dev/null
    docker run --rm outage-worker:check --version
    echo "container: built and run"
else
    # No daemon: check the recipe's instructions are all Dockerfile ones.
    bad=$(grep -v -e '^\s*#' -e '^\s*$' -e '^\s' deploy/Containerfile \
        | grep -v -E '^(FROM|WORKDIR|COPY|RUN|USER|STOPSIGNAL|ENTRYPOINT|CMD|ENV|ARG|LABEL|EXPOSE) ' || true)
    [ -z "$bad" ] || { echo "error: unknown Containerfile instruction: $bad" >&2; exit 1; }
    echo "container: no Docker daemon here; instructions checked, not built"
fi

# Kubernetes, offline: `kubectl create --dry-run=client` still asks a server
# for its API groups, so the manifests are assembled by `kubectl kustomize`
# (Debian's kubernetes-client) and checked against the API's schemas by
# kubernetes-validate (PyPI; unknown fields are errors), for the oldest
# Kubernetes still widely run and the newest it knows.
k8s_venv=${OUTAGE_K8S_VENV:-target/tools/k8s-venv}
if command -v kubectl >/dev/null && [ -x "$k8s_venv/bin/kubernetes-validate" ]; then
    k8s=$(mktemp -d)
    trap 'rm -rf "${dir:-}" "$k8s"' EXIT
    kubectl kustomize deploy/kubernetes > "$k8s/all.yaml"
    for version in 1.29.0 1.34.0; do
        "$k8s_venv/bin/kubernetes-validate" --strict --quiet -k "$version" \
            "$k8s/all.yaml" deploy/kubernetes/secret.example.yaml
    done
    "$k8s_venv/bin/python" deploy/kubernetes/check.py "$k8s/all.yaml"
    echo "kubernetes: manifests assembled by kubectl kustomize and valid for 1.29 and 1.34 (strict)"
elif [ -n "${OUTAGE_REQUIRE_K8S:-}" ]; then
    echo "error: kubectl or $k8s_venv/bin/kubernetes-validate missing" >&2
    exit 1
else
    echo "kubernetes: kubectl or kubernetes-validate ($k8s_venv) missing; manifests not validated"
fi
