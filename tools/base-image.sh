#!/usr/bin/env bash
# A base image from Debian's packages, for where no image registry is reachable: debootstrap a minimal
# bookworm (its python3 is 3.11, as constraints.txt is pinned for) with python3-venv, and import it.
# Needs root and podman or docker. Then: BASE_IMAGE=ferry-base:bookworm make image
set -euo pipefail
tag="${TAG:-ferry-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
command -v debootstrap >/dev/null || { echo "debootstrap is needed: apt-get install debootstrap" >&2; exit 1; }
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >&2
# The Containerfile calls python3 and the build's venv keeps /usr/bin/python3: nothing more is needed.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
engine="$(command -v podman || command -v docker)" || { echo "podman or docker is needed" >&2; exit 1; }
tar -C "$root" -c . | "$engine" import - "$tag" >&2
echo "$tag"
