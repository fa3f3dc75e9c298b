#!/usr/bin/env bash
# Build the image with podman (no daemon, no root needed for the build itself):
#   deploy/image/build.sh IMAGE BASE_IMAGE
# Mounts into the build, read-only, when present: this machine's CA bundle (HOST_CA; pip's
# traffic may pass a TLS-inspecting proxy) and a folder of wheels holding torch (TORCH_WHEELS,
# default: the find-links folder of this machine's pip configuration). Prints the build time
# and the image size.
set -euo pipefail
image="$1"
base="$2"
host_ca="${HOST_CA:-/etc/ssl/certs/ca-certificates.crt}"
wheels="${TORCH_WHEELS:-$(pip config get global.find-links 2>/dev/null || true)}"
args=(--isolation chroot --network host --tag "$image" --build-arg "BASE_IMAGE=$base")
if [ -f "$host_ca" ]; then
  args+=(--volume "$host_ca:/etc/ssl/host-ca.crt:ro" --build-arg PIP_CERT=/etc/ssl/host-ca.crt)
fi
if [ -n "$wheels" ] && compgen -G "$wheels/torch-*.whl" >/dev/null; then
  args+=(--volume "$wheels:/wheels:ro" --build-arg TORCH_FIND_LINKS=/wheels)
fi
start=$(date +%s)
podman build "${args[@]}" .
took=$(($(date +%s) - start))
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "image $image: built in ${took} s; $((size / 1000000)) MB (base $base)"
