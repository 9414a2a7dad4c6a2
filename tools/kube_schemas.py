"""The schemas the chart and the Compose file are validated against, from their projects' Go modules, pinned.

Each module's zip is fetched once through the Go module proxy (``go mod download``, which checks it against
Go's checksum database) and only the schema files are kept under ``~/.cache/ferry/schemas/<module>@<version>``,
outside the checkout, as Kafka's jars and helm are. ``python -m tools.kube_schemas`` fetches what is missing
and prints the folder; ``make test`` runs it before the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ferry" / "schemas"


@dataclass(frozen=True)
class SchemaModule:
    """The schema files of one Go module at one version: every file under ``folder`` whose name matches."""

    module: str
    version: str
    folder: str
    names: tuple[str, ...] = ()
    """File names to keep; empty: every .json and .yaml file of the folder."""

    @property
    def root(self) -> Path:
        return CACHE / f"{self.module.replace('/', '+')}@{self.version}"

    def path(self, name: str) -> Path:
        return self.root / self.folder / name


# Two supported Kubernetes minors: 1.37 (the client helm v4.3.2 is built with) and 1.35 (the oldest of the
# three minors the project supports in December 2026), so a field added or removed between them shows.
KUBERNETES = {
    minor: SchemaModule("k8s.io/kubernetes", version, "api/openapi-spec/v3")
    for minor, version in (("1.37", "v1.37.2"), ("1.35", "v1.35.4"))
}
KEDA = SchemaModule(
    "github.com/kedacore/keda/v2",
    "v2.21.1",
    "config/crd/bases",
    ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml"),
)
PROMETHEUS_OPERATOR = SchemaModule(
    "github.com/prometheus-operator/prometheus-operator",
    "v0.85.0",
    "example/prometheus-operator-crd",
    ("monitoring.coreos.com_prometheusrules.yaml", "monitoring.coreos.com_servicemonitors.yaml"),
)
TRAINING_OPERATOR = SchemaModule(
    "github.com/kubeflow/training-operator", "v1.8.1", "manifests/base/crds", ("kubeflow.org_pytorchjobs.yaml",)
)
COMPOSE_SPEC = SchemaModule("github.com/compose-spec/compose-go/v2", "v2.16.2", "schema", ("compose-spec.json",))
CRD_MODULES = (KEDA, PROMETHEUS_OPERATOR, TRAINING_OPERATOR)
MODULES = (*KUBERNETES.values(), *CRD_MODULES, COMPOSE_SPEC)


class SchemaFetchError(RuntimeError):
    """A module could not be fetched; the message says what to do."""


def go_binary() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise SchemaFetchError("Go is needed to fetch the schemas' modules: bash tools/system-packages.sh")
    return found


def ensure(spec: SchemaModule) -> Path:
    """The module's schema folder, extracted from its zip on first use."""
    done = spec.root / ".complete"
    if done.exists():
        return spec.root / spec.folder
    # The zip, not the extracted Dir: a module whose go.mod asks for a newer Go is still downloaded whole.
    result = subprocess.run(
        [go_binary(), "mod", "download", "-json", f"{spec.module}@{spec.version}"],
        capture_output=True,
        text=True,
        env=os.environ | {"GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"},
    )
    found = json.loads(result.stdout or "{}")
    if not found.get("Zip") or not Path(found["Zip"]).exists():
        raise SchemaFetchError(f"go mod download {spec.module}@{spec.version} failed: {result.stderr[-2000:]}")
    prefix = f"{spec.module}@{spec.version}/{spec.folder}/"
    partial = spec.root.with_name(spec.root.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(found["Zip"]) as archive:
        for member in archive.namelist():
            name = member.removeprefix(prefix)
            if name == member or "/" in name or not _wanted(spec, name):
                continue
            target = partial / spec.folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(member))
    if not (partial / spec.folder).is_dir():
        raise SchemaFetchError(f"{spec.module}@{spec.version} has no {spec.folder}/{list(spec.names) or ''}")
    (partial / ".complete").write_text(found.get("Sum", "") + "\n")
    shutil.rmtree(spec.root, ignore_errors=True)
    partial.rename(spec.root)  # whole or absent
    return spec.root / spec.folder


def _wanted(spec: SchemaModule, name: str) -> bool:
    return name in spec.names if spec.names else name.endswith((".json", ".yaml"))


def main() -> int:
    """Fetch every pinned schema module that is missing; print the cache folder."""
    try:
        for spec in MODULES:
            ensure(spec)
    except SchemaFetchError as error:
        print(error, file=sys.stderr)
        return 1
    print(CACHE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
