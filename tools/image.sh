#!/usr/bin/env bash
# `make image`: build the Containerfile with podman or docker, whichever is present (podman first).
# VARIANT=cpu|cuda, BASE_IMAGE=<image>, TAG=<tag> and CA_BUNDLE=<file> pass through; podman builds with --isolation=chroot,
# which needs no daemon and no user namespaces. Prints the tag built.
set -euo pipefail
cd "$(dirname "$0")/.."
variant="${VARIANT:-cpu}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
tag="${TAG:-ferry:${version}-${variant}}"
args=(--file Containerfile --build-arg "VARIANT=${variant}" --tag "$tag")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE}")
# The CA bundle pip trusts here (PIP_CERT, else SSL_CERT_FILE, else Debian's), as the build secret ca-bundle:
# behind a TLS-intercepting proxy PyPI is reachable only with it, and a secret is never in a layer.
ca_bundle="${CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}"
[ -s "$ca_bundle" ] && args+=(--secret "id=ca-bundle,src=${ca_bundle}")
if command -v podman >/dev/null; then
    podman build --isolation=chroot "${args[@]}" . >&2
elif command -v docker >/dev/null; then
    docker build "${args[@]}" . >&2
else
    echo "neither podman nor docker is installed: apt-get install podman" >&2
    exit 1
fi
echo "$tag"
