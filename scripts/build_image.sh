#!/usr/bin/env bash
# Build Castframe's container image (what `make image` runs).
#
#   scripts/build_image.sh                        # castframe:latest from the default base
#   IMAGE=castframe:cuda EXTRAS=faces,postgres,s3,diffusers,qwen \
#     BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 scripts/build_image.sh
#
# Environment: CONTAINER_ENGINE (podman or docker; found if unset), IMAGE, BASE_IMAGE, EXTRAS.
# Behind a proxy or a private index, the build's pip uses what this machine's pip uses:
# PIP_INDEX_URL, PIP_EXTRA_INDEX_URL and PIP_TRUSTED_HOST pass through as build arguments,
# and the CA bundle named by PIP_CERT (or `pip config get global.cert`) as the build secret
# `pip_cert`. Local paths (file:// indexes, find-links) cannot reach the build and are dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=${CONTAINER_ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
IMAGE=${IMAGE:-localhost/castframe:latest}
args=(build -f Containerfile -t "$IMAGE")
[ "$ENGINE" = podman ] && args+=(--format docker)   # keeps HEALTHCHECK (OCI drops it)
[ "$ENGINE" = docker ] && export DOCKER_BUILDKIT=1  # secrets need BuildKit
args+=(--network host)
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
[ -n "${EXTRAS:-}" ] && args+=(--build-arg "EXTRAS=$EXTRAS")

pip_setting() {  # the environment's value, else pip's own configuration
    local env=$1 key=$2 value
    value=${!env:-}
    if [ -z "$value" ] && command -v python3 >/dev/null; then
        value=$(python3 -m pip config get "$key" 2>/dev/null || true)
    fi
    printf '%s' "$value"
}
remote_only() {  # drop file:// and local paths, keep http(s) URLs
    local out=() url
    for url in $1; do case $url in http://*|https://*) out+=("$url") ;; esac; done
    printf '%s' "${out[*]:-}"
}
index=$(remote_only "$(pip_setting PIP_INDEX_URL global.index-url)")
extra=$(remote_only "$(pip_setting PIP_EXTRA_INDEX_URL global.extra-index-url)")
trusted=$(pip_setting PIP_TRUSTED_HOST global.trusted-host)
cert=$(pip_setting PIP_CERT global.cert)
[ -n "$index" ] && args+=(--build-arg "PIP_INDEX_URL=$index")
[ -n "$extra" ] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra")
[ -n "$trusted" ] && args+=(--build-arg "PIP_TRUSTED_HOST=$trusted")
[ -n "$cert" ] && [ -r "$cert" ] && args+=(--secret "id=pip_cert,src=$cert")

echo "+ $ENGINE ${args[*]} ." >&2
"$ENGINE" "${args[@]}" .
echo "built $IMAGE: $("$ENGINE" image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')"
