#!/usr/bin/env bash
# kube-apiserver and etcd, built once from their Go modules (k8s.io/kubernetes, go.etcd.io/etcd/server/v3) into
# the cache outside the checkout, as tools/helm.sh builds helm; prints the folder holding both binaries.
# Idempotent: a second call only prints. The trainer's PyTorchJob tests run them when they are there
# (tests/integration/test_trainer_kube_api.py). Building takes tens of CPU-minutes.
#
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, k8s.io/apiserver, ...) with folders that its
# module zip does not carry, so `go install k8s.io/kubernetes/cmd/kube-apiserver@...` refuses it. A small
# module requires it instead, and points each staging module at its published twin (v0.x of v1.x).
set -euo pipefail
KUBERNETES_VERSION="v1.37.2"
ETCD_VERSION="v3.7.0"  # the etcd client kube-apiserver v1.37.2 is built with
tools="${XDG_CACHE_HOME:-$HOME/.cache}/ferry/tools/kube-apiserver-${KUBERNETES_VERSION}"
if [ ! -x "$tools/kube-apiserver" ] || [ ! -x "$tools/etcd" ]; then
    go="$(command -v go || echo /usr/local/go/bin/go)"
    [ -x "$go" ] || { echo "Go is needed to build kube-apiserver: bash tools/system-packages.sh" >&2; exit 1; }
    mkdir -p "$tools"
    partial="$tools/build-$$"
    trap 'rm -rf "$partial"' EXIT
    mkdir -p "$partial/module"
    echo "building kube-apiserver ${KUBERNETES_VERSION} and etcd ${ETCD_VERSION} from their Go modules (once)" >&2
    GOFLAGS=-mod=mod "$go" mod download "k8s.io/kubernetes@${KUBERNETES_VERSION}" >&2
    upstream="$("$go" env GOMODCACHE)/k8s.io/kubernetes@${KUBERNETES_VERSION}/go.mod"
    staging="v0.${KUBERNETES_VERSION#v1.}"
    {
        printf 'module ferry.local/kube-apiserver\n\ngo 1.26.0\n\n'
        sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9.-]*\) => ./staging/src/.*$|replace \1 => \1 '"$staging"'|p' "$upstream"
    } >"$partial/module/go.mod"
    (
        cd "$partial/module"
        export GOFLAGS=-mod=mod GOTOOLCHAIN=local
        "$go" get "k8s.io/kubernetes/cmd/kube-apiserver@${KUBERNETES_VERSION}" "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2
        nice -n 10 "$go" build -o "$partial/etcd" go.etcd.io/etcd/server/v3 >&2
        nice -n 10 "$go" build -o "$partial/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
    )
    mv "$partial/etcd" "$tools/etcd"
    mv "$partial/kube-apiserver" "$tools/kube-apiserver"
fi
echo "$tools"
