#!/usr/bin/env bash
# Helm, built once from its Go module (helm.sh/helm/v4) into the cache outside the checkout, as SeaweedFS and
# Kafka's jars are; prints the binary's path. Idempotent: a second call only prints. `make test` and .ci/run
# call it; the chart's tests read the path from FERRY_HELM or the same cache. Building takes several CPU-minutes.
set -euo pipefail
HELM_VERSION="v4.3.2"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ferry/tools/helm-${HELM_VERSION}"
binary="$cache/helm"
if [ ! -x "$binary" ]; then
    go="$(command -v go || echo /usr/local/go/bin/go)"
    [ -x "$go" ] || { echo "Go is needed to build helm: bash tools/system-packages.sh" >&2; exit 1; }
    mkdir -p "$cache"
    partial="$cache/build-$$"
    trap 'rm -rf "$partial"' EXIT
    echo "building helm ${HELM_VERSION} from its Go module (once; several minutes)" >&2
    # Whole or absent: built into a private folder, then renamed into place.
    GOBIN="$partial" GOFLAGS=-mod=mod nice -n 10 "$go" install "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}" >&2
    mv "$partial/helm" "$binary"
fi
echo "$binary"
