#!/usr/bin/env bash
# Opt-in smoke test of a built image (several GB, so not in CI): inside it, as the user the image runs as (10001),
# `ferry --help`, each service's `python -m services.<name> --help` (its variables; nothing starts), its modules
# import (bootstrap, settings, process entry), and torch and ONNX Runtime load.
# With podman the image is mounted (podman image mount) and each command runs chrooted into it, in a mount
# namespace of its own with /proc and /dev, under the image's user, environment and working directory: that needs
# root, and no OCI runtime (which a sandbox may not let set rlimits or cgroups). With docker, `docker run`.
# Usage: bash tools/image-smoke.sh [TAG]   (default: what `make image` builds for VARIANT)
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
tag="${1:-ferry:${version}-${VARIANT:-cpu}}"

if command -v podman >/dev/null; then
    root="$(podman image mount "$tag")"
    trap 'podman image unmount "$tag" >/dev/null' EXIT
    user="$(podman image inspect --format '{{.Config.User}}' "$tag")"
    workdir="$(podman image inspect --format '{{.Config.WorkingDir}}' "$tag")"
    mapfile -t environment < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$tag" | sed '/^$/d')
    inside() {
        unshare --mount --fork -- sh -c 'root="$0" user="$1"; shift; mount -t proc proc "$root/proc" \
            && mount --rbind /dev "$root/dev" && exec chroot --userspec="$user" "$root" "$@"' "$root" "$user" \
            /usr/bin/env -i "${environment[@]}" sh -c "cd '$workdir' && $1"
    }
elif command -v docker >/dev/null; then
    inside() { docker run --rm "$tag" sh -c "$1"; }
else
    echo "podman or docker is needed" >&2
    exit 1
fi

test "$(inside 'id -u')" = 10001 || { echo "${tag} does not run as uid 10001" >&2; exit 1; }
inside 'ferry --help' >/dev/null
inside 'python -m services.registry.migrate --help' >/dev/null
for service in registry trainer evaluator gateway monitor console; do
    inside "python -m services.${service} --help" 2>/dev/null | grep -q "^usage: python -m services.${service}" \
        || { echo "python -m services.${service} --help fails in ${tag}" >&2; exit 1; }
    inside "python -c 'import services.${service}.bootstrap, services.${service}.settings, services.${service}.__main__'" \
        || { echo "services.${service} does not import in ${tag}" >&2; exit 1; }
    echo "ok: services.${service} (--help, imports)"
done
inside "python -c \"import onnxruntime, torch; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), 'torch', torch.__version__, 'cuda', torch.version.cuda)\""
