#!/usr/bin/env bash
# The system programs Ferry's tests and local stack run, from Debian's packages, installed when missing:
# Java (Kafka's jars), Maven (fetches them), Prometheus (promtool checks the generated rules, the server
# fires them beside the monitor), Alertmanager (delivers them to the monitor's webhook), Go (builds
# SeaweedFS, the local S3 store), Chromium (the console's browser tests). Needs root (or sudo) only when
# something is missing; `make test` and .ci/run call it.
set -euo pipefail
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
# Any Go >= 1.21 fetches the toolchain SeaweedFS's go.mod asks for.
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || missing+=(golang-go)
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing from Debian's packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
