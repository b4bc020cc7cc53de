#!/usr/bin/env bash
# Idempotent: make sure a Docker engine answers on this machine. Does nothing when `docker info`
# already works; otherwise (as root) installs Debian's engine if missing and starts dockerd in
# the background. It is left running: later scripts and tests share it.
#   DOCKERD_LOG   where dockerd writes its log (default /var/log/medswarm-dockerd.log)
#   DOCKERD_WAIT  seconds to wait for the engine (default 60)
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/medswarm-dockerd.log}
wait_s=${DOCKERD_WAIT:-60}
sock=/var/run/docker.sock
start=$SECONDS

say() { echo "docker-engine: $*" >&2; }
engine_up() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

if engine_up; then
    say "engine already running ($(docker info --format '{{.ServerVersion}}' 2>/dev/null))"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    say "no Docker engine answers and starting one needs root (this is uid $(id -u)):"
    say "run this script as root, or start dockerd yourself"
    exit 1
fi

if ! command -v dockerd >/dev/null; then
    say "installing docker.io with apt-get"
    t=$SECONDS
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # docker.io brings dockerd, containerd, runc and the client; no recommends (no cgroupfs-mount
    # etc. needed in a container host that already has cgroups mounted).
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null
    say "installed in $((SECONDS - t)) s"
fi

if pgrep -x dockerd >/dev/null; then
    say "dockerd is already starting (pid $(pgrep -x dockerd | head -1)); waiting for it"
else
    say "starting dockerd (log: $log)"
    mkdir -p "$(dirname "$log")"
    # No iptables: this machine's containers live on networks the project creates, and the host's
    # firewall is not ours to change. setsid: dockerd outlives this script and its shell.
    setsid dockerd --iptables=false --ip6tables=false >>"$log" 2>&1 </dev/null &
fi

for _ in $(seq "$wait_s"); do
    if [ -S "$sock" ] && engine_up; then
        say "engine up after $((SECONDS - start)) s ($(docker info --format '{{.ServerVersion}}'))"
        exit 0
    fi
    sleep 1
done
say "engine did not answer within $wait_s s; tail of $log:"
tail -n 30 "$log" >&2 || true
exit 1
