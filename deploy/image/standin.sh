#!/usr/bin/env bash
# Build a stand-in for the Ray base image where rayproject/ray cannot be pulled: Debian
# bookworm (its Python is 3.11, like the Ray image's py311) from Debian's own packages, with the
# same contract the Dockerfile relies on: a non-root user `ray` (uid 1000, group users) whose
# Python 3.11 is first on PATH and takes `pip install`, and /home/ray as the working folder.
# Ray itself is not in it: the image's `pip install` brings it, as the Ray image would have.
#   deploy/image/standin.sh [IMAGE]      (default localhost/tuneserve-standin:bookworm)
set -euo pipefail
image="${1:-localhost/tuneserve-standin:bookworm}"
if podman image exists "$image"; then
  echo "stand-in $image: present"
  exit 0
fi
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
root="$(mktemp -d "${TMPDIR:-/tmp}/standin.XXXXXX")"
trap 'rm -rf "$root"' EXIT
echo "stand-in: debootstrap bookworm from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root/fs" "$mirror" >"$root/debootstrap.log" 2>&1 \
  || { tail -20 "$root/debootstrap.log"; exit 1; }
chroot "$root/fs" useradd --create-home --uid 1000 --gid users --shell /bin/bash ray
chroot "$root/fs" su ray -c "python3 -m venv /home/ray/python"
rm -rf "$root/fs/var/cache/apt/archives"/*.deb "$root/fs/var/lib/apt/lists"/*
tar -C "$root/fs" -c . | podman import \
  --change "USER ray" \
  --change "WORKDIR /home/ray" \
  --change "ENV PATH=/home/ray/python/bin:/usr/local/bin:/usr/bin:/bin" \
  --change "ENV HOME=/home/ray" \
  - "$image" >/dev/null
echo "stand-in $image: built"
