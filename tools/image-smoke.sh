#!/usr/bin/env bash
# Opt-in smoke test of a built image (several GB, so not in CI): inside it, `ferry --help`, and each service's
# modules import (its bootstrap, settings and process entry), as the non-root user the image runs as.
# Usage: bash tools/image-smoke.sh [TAG]   (default: what `make image` builds for VARIANT)
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
tag="${1:-ferry:${version}-${VARIANT:-cpu}}"
engine="$(command -v podman || command -v docker)" || { echo "podman or docker is needed" >&2; exit 1; }
"$engine" run --rm "$tag" ferry --help >/dev/null
"$engine" run --rm "$tag" python -m services.registry.migrate --help >/dev/null
for service in registry trainer evaluator gateway monitor console; do
    "$engine" run --rm "$tag" python -c "import services.${service}.bootstrap, services.${service}.settings, services.${service}.__main__" \
        || { echo "services.${service} does not import in ${tag}" >&2; exit 1; }
    echo "ok: services.${service}"
done
"$engine" run --rm "$tag" python -c "import onnxruntime, torch; print('onnxruntime', onnxruntime.get_available_providers(), 'torch', torch.__version__)"
