"""Offline validation of Kubernetes objects: built-in kinds against a Kubernetes release's OpenAPI v3 schemas,
custom resources against their CRDs' own schemas (the pinned modules of :mod:`tools.kube_schemas`).

Strict as ``kubectl --validate=strict`` is: a field a schema does not name is an error (the OpenAPI documents
leave ``additionalProperties`` open; a misspelt field would otherwise pass), except where the schema keeps
unknown fields (``x-kubernetes-preserve-unknown-fields``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator, Draft7Validator

from tools.kube_schemas import CRD_MODULES, KUBERNETES, SchemaModule, ensure

GVK = tuple[str, str, str]
"""(group, version, kind); the core group is ''."""


def gvk_of(document: dict[str, Any]) -> GVK:
    group, _, version = str(document.get("apiVersion", "")).rpartition("/")
    return group, version, str(document.get("kind", ""))


def strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever it lists properties and keeps no unknown field."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


def _errors(validator: Draft4Validator | Draft7Validator, document: dict[str, Any]) -> list[str]:
    return sorted(
        f"{'.'.join(str(part) for part in error.absolute_path) or '(root)'}: {error.message[:300]}"
        for error in validator.iter_errors(document)
    )


@dataclass
class OpenApiSchemas:
    """One Kubernetes release's built-in kinds (api/openapi-spec/v3 of k8s.io/kubernetes)."""

    folder: Path
    _where: dict[GVK, tuple[Path, str]] = field(default_factory=dict)
    _validators: dict[GVK, Draft4Validator] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path in sorted(self.folder.glob("api*__v*_openapi.json")):
            for name, schema in json.loads(path.read_text())["components"]["schemas"].items():
                for kind in schema.get("x-kubernetes-group-version-kind", []):
                    self._where.setdefault((kind["group"], kind["version"], kind["kind"]), (path, name))

    def knows(self, gvk: GVK) -> bool:
        return gvk in self._where

    def validator(self, gvk: GVK) -> Draft4Validator:
        if gvk not in self._validators:
            path, name = self._where[gvk]
            components = strict(json.loads(path.read_text())["components"])
            # OpenAPI 3.0's schema objects are JSON Schema draft 4 (boolean exclusiveMinimum, no const).
            self._validators[gvk] = Draft4Validator({"$ref": f"#/components/schemas/{name}", "components": components})
        return self._validators[gvk]

    def errors(self, document: dict[str, Any]) -> list[str]:
        return _errors(self.validator(gvk_of(document)), document)


@dataclass
class CrdSchemas:
    """Custom resources, each version's ``openAPIV3Schema`` of the CRD files given."""

    files: Iterable[Path]
    _validators: dict[GVK, Draft7Validator] = field(default_factory=dict)
    sources: dict[GVK, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path in self.files:
            for crd in yaml.safe_load_all(path.read_text()):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                spec = crd["spec"]
                for version in spec["versions"]:
                    gvk = (spec["group"], version["name"], spec["names"]["kind"])
                    # metadata is only "type: object" here: the API server owns its schema.
                    self._validators[gvk] = Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
                    self.sources[gvk] = path.name

    def knows(self, gvk: GVK) -> bool:
        return gvk in self._validators

    def errors(self, document: dict[str, Any]) -> list[str]:
        return _errors(self._validators[gvk_of(document)], document)


def crd_files(modules: Iterable[SchemaModule] = CRD_MODULES) -> list[Path]:
    """The CRD files of the pinned modules, fetched on first use."""
    return [spec.path(name) for spec in modules for name in spec.names if ensure(spec) and spec.path(name).exists()]


@dataclass
class Validator:
    """Every built-in kind against each Kubernetes release given, every custom resource against its CRD."""

    releases: dict[str, OpenApiSchemas]
    crds: CrdSchemas

    @classmethod
    def pinned(cls) -> Validator:
        releases = {minor: OpenApiSchemas(ensure(spec)) for minor, spec in KUBERNETES.items()}
        return cls(releases, CrdSchemas(crd_files()))

    def errors(self, document: dict[str, Any]) -> list[str]:
        """What is wrong with ``document``, each line naming the schema that says so; empty when valid."""
        gvk = gvk_of(document)
        if self.crds.knows(gvk):
            return [f"{self.crds.sources[gvk]}: {error}" for error in self.crds.errors(document)]
        found = [release for release, schemas in self.releases.items() if schemas.knows(gvk)]
        missing = [f"Kubernetes {release} has no {'/'.join(gvk)}" for release in self.releases if release not in found]
        if not found:
            return [f"no schema for {'/'.join(gvk)}"]
        return missing + [
            f"Kubernetes {release}: {error}" for release in found for error in self.releases[release].errors(document)
        ]
