#!/usr/bin/env bash
# Build the medswarm images: medswarm:latest (a hospital node) and medswarm-chain:latest (anvil).
# Idempotent; each stage prints its duration and is skipped when nothing changed. Stages:
#   1. base image: BASE_IMAGE when given (e.g. python:3.11-slim on a machine that reaches a
#      registry); otherwise a local Debian bookworm image made with debootstrap + docker import
#      (medswarm-base:bookworm, made once), for machines without a registry.
#   2. wheelhouse: every Python dependency as a wheel in wheelhouse/ (gitignored), made with
#      the host's pip for Python 3.11 and remade when pyproject.toml changes; the image installs
#      from it with no network.
#   3. docker build of both images from ./Dockerfile (docker's layer cache skips what is done).
# Environment: MEDSWARM_IMAGE, MEDSWARM_CHAIN_IMAGE (tags), BASE_IMAGE, MEDSWARM_BASE_IMAGE (the
# local base's tag), PYTHON (a Python 3.11 for pip), TORCH_INDEX_URL (an extra index holding the
# CPU torch wheel, on machines where pip does not already find it), DEBIAN_MIRROR.
# Needs a running engine (scripts/docker-engine.sh) and the anvil binary (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_IMAGE=${MEDSWARM_IMAGE:-medswarm:latest}
CHAIN_IMAGE=${MEDSWARM_CHAIN_IMAGE:-medswarm-chain:latest}
LOCAL_BASE=${MEDSWARM_BASE_IMAGE:-medswarm-base:bookworm}
WHEELS=wheelhouse
ANVIL=node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
TORCH_PIN=$(grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')

say() { echo "docker-image: $*" >&2; }
die() { say "error: $*"; exit 1; }
# stage NAME COMMAND...: run a stage and print how long it took.
stage() {
    local name=$1 t=$SECONDS
    shift
    say "[$name] ..."
    "$@"
    say "[$name] done in $((SECONDS - t)) s"
}

make_base() {
    if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        say "$LOCAL_BASE exists; reusing it (docker rmi it to remake)"
        return
    fi
    [ "$(id -u)" -eq 0 ] || die "debootstrap needs root; or pass BASE_IMAGE=python:3.11-slim"
    if ! command -v debootstrap >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    fi
    local root
    root=$(mktemp -d /var/tmp/medswarm-base.XXXXXX)
    chmod 755 "$root" # it becomes the image's /: mktemp's 0700 would lock non-root users out
    # python3-venv brings ensurepip (the venv's pip); ca-certificates for an online fallback.
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >"$root.log" 2>&1 \
        || { tail -n 20 "$root.log" >&2; rm -rf "$root"; die "debootstrap failed"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root.log"
    tar -C "$root" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
    rm -rf "$root"
}

pick_python() {
    local candidate
    for candidate in ${PYTHON:-} .venv/bin/python python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
            echo "$candidate"
            return
        fi
    done
    die "the wheelhouse needs a Python 3.11 (the image's); set PYTHON=/path/to/python3.11"
}

make_wheels() {
    local python key
    python=$(pick_python)
    key="$(sha256sum pyproject.toml | cut -d' ' -f1) ${TORCH_INDEX_URL:-}"
    if [ -f "$WHEELS/.key" ] && [ "$(cat "$WHEELS/.key")" = "$key" ]; then
        say "wheelhouse up to date ($(find "$WHEELS" -name '*.whl' | wc -l) wheels)"
        return
    fi
    find "$WHEELS" -name '*.whl' -delete
    rm -f "$WHEELS/.key"
    # The same list the Dockerfile installs: dependencies plus the build backend.
    "$python" -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); \
print('\n'.join([*d['project']['dependencies'], *d['build-system']['requires']]))" \
        >"$WHEELS/requirements.txt"
    # torch is pinned exactly, and pip finds the CPU build (2.13.0+cpu sorts above 2.13.0) on
    # local disk here or in TORCH_INDEX_URL; a CUDA build would bring nvidia-* wheels, checked below.
    "$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$WHEELS" \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "$TORCH_PIN" \
        -r "$WHEELS/requirements.txt"
    rm -f "$WHEELS/requirements.txt"
    if ls "$WHEELS" | grep -q '^nvidia_' || ! ls "$WHEELS" | grep -q '^torch-.*+cpu'; then
        die "the wheelhouse has no CPU-only torch ($(ls "$WHEELS" | grep -E '^(torch|nvidia)' \
            | head -3 | tr '\n' ' ')); set TORCH_INDEX_URL to an index with the +cpu wheel"
    fi
    echo "$key" >"$WHEELS/.key"
    say "wheelhouse: $(find "$WHEELS" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1)"
}

build() {
    local target=$1 tag=$2
    local log=${TMPDIR:-/tmp}/medswarm-docker-build-$target.log
    docker build --build-arg "BASE_IMAGE=$base" --target "$target" --tag "$tag" . >"$log" 2>&1 \
        || { tail -n 40 "$log" >&2; die "docker build --target $target failed (log: $log)"; }
    say "$tag: $(docker image inspect "$tag" --format '{{.Id}} {{.Size}}' \
        | awk '{printf "%s, %d MB", substr($1, 8, 12), $2 / 1e6}')"
}

# The work is in main(), called on the last line: bash then has read the whole file before it
# runs any of it, so editing the script during a (long) run cannot derail that run.
main() {
    docker info >/dev/null 2>&1 \
        || die "no Docker engine answers; start one with scripts/docker-engine.sh"
    [ -x "$ANVIL" ] || die "$ANVIL is missing; scripts/setup.sh installs it (npm @foundry-rs/anvil)"
    if [ -n "${BASE_IMAGE:-}" ]; then
        base=$BASE_IMAGE
        say "base image: $base (given)"
    else
        base=$LOCAL_BASE
        stage "base image $base" make_base
    fi
    stage wheelhouse make_wheels
    stage "build $CHAIN_IMAGE" build chain "$CHAIN_IMAGE"
    stage "build $NODE_IMAGE" build node "$NODE_IMAGE"
}

main "$@"
