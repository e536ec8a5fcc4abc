#!/usr/bin/env bash
# Checks the deployment recipes where the tools exist: the systemd units with
# `systemd-analyze verify` (against a built outage-worker), the container
# recipe with `docker build` when a Docker daemon answers. Prints what it
# could not check. Usage: bash deploy/check.sh [path/to/outage-worker]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${1:-target/debug/outage-worker}
[ -x "$bin" ] || cargo build --quiet -p outage-runtime-std --features cli --bin outage-worker
bin=$(realpath "$bin")

# What the units promise, whatever the host has.
for unit in deploy/outage-worker.service 'deploy/outage-worker@.service'; do
    for want in 'KillMode=mixed' 'Restart=on-failure' 'RestartPreventExitStatus=2 3' 'KillSignal=SIGTERM'; do
        grep -qx "$want" "$unit" || { echo "error: $unit lacks $want" >&2; exit 1; }
    done
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

# The image's command line must be one the binary accepts.
"$bin" --help >/dev/null
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
