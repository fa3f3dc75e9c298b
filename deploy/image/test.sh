#!/usr/bin/env bash
# Run the image as a user would and drive it over HTTP (deploy/image/smoke.py): the service
# comes up (/readyz), `base` classifies, a fine-tuning job runs inside the container through
# the job API and its model answers; then the container is stopped and removed.
#   deploy/image/test.sh IMAGE [PORT]
set -euo pipefail
image="$1"
port="${2:-18321}"
name="tuneserve-image-test-$$"
python="${PYTHON:-.venv/bin/python}"
# the host's network, so that Ray and the service stay on 127.0.0.1 as under `make run`
podman run --detach --rm --name "$name" --runtime runc --network host --shm-size 2g \
  "$image" tuneserve run --port "$port" >/dev/null
stop() {
  status=$?
  if [ "$status" != 0 ]; then podman logs --tail 60 "$name" 2>&1 || true; fi
  podman stop --time 30 "$name" >/dev/null 2>&1 || true
  exit "$status"
}
trap stop EXIT
"$python" deploy/image/smoke.py "http://127.0.0.1:$port"
