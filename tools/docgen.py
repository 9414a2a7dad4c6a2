"""The reference parts of the docs, generated from the code so that they cannot drift from it.

A page under ``docs/`` asks for a generated part with a marker line, which the MkDocs hook
(``tools/mkdocs_hooks.py``) replaces at build time:

- ``<!-- ferry:settings MODULE:CLASS -->``: the configuration table of a pydantic-settings class;
- ``<!-- ferry:events -->``: the event catalogue of ``shared/events.py``;
- ``<!-- ferry:openapi SERVICE -->``: the REST API of a service, from its FastAPI app's OpenAPI;
- ``<!-- ferry:layout -->``: the rooms each service under ``services/`` has, from its files.

``python -m tools.docgen --out DIR`` writes every page with its markers expanded (and each service's
``openapi.json``) into DIR, to read or diff without building the site.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import tempfile
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from shared.service_args import env_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!-- ferry:(?P<kind>settings|events|openapi|layout)(?: (?P<arg>\S+))? -->$", re.MULTILINE)

SETTINGS_CLASSES: tuple[str, ...] = (
    "shared.settings:FerrySettings",
    "shared.local.supervisor:SupervisorSettings",
    "services.registry.settings:RegistrySettings",
    "services.trainer.settings:TrainerSettings",
    "services.evaluator.settings:EvaluatorSettings",
    "services.gateway.settings:GatewaySettings",
    "services.monitor.settings:MonitorSettings",
    "services.console.settings:ConsoleSettings",
)
"""Every settings class a Ferry process reads; ``tests/unit/test_docs.py`` checks none is missing."""

API_SERVICES: tuple[str, ...] = ("registry", "gateway", "evaluator", "monitor", "console")


# --- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One environment variable of a settings class."""

    variable: str
    aliases: tuple[str, ...]
    type: str
    default: str
    description: str


def load_class(path: str) -> type[Any]:
    module, _, name = path.partition(":")
    found: type[Any] = getattr(importlib.import_module(module), name)
    return found


def type_text(annotation: Any) -> str:
    """A short, readable name of a field's type: ``float | None``, ``dict[str, BatchSettings]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(json.dumps(arg) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return type_text(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(type_text(arg) for arg in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if value != field.default_factory():  # type: ignore[call-arg]
            return "*(generated)*"  # a fresh id, say
    elif field.default is PydanticUndefined:
        return "*(required)*"
    else:
        value = field.default
    if value is None:
        return "*(unset)*"
    if isinstance(value, BaseModel):
        return f"`{value.model_dump_json()}`"
    if isinstance(value, dict | list):
        return f"`{json.dumps(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def settings_of(cls: type[BaseSettings]) -> list[Setting]:
    """Every variable of a settings class; a nested settings class (``ferry``) is its own table."""
    prefix = cls.model_config.get("env_prefix", "")
    rows = []
    for name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings):
            continue
        names = env_names(prefix, name, field)
        rows.append(
            Setting(
                names[0], tuple(names[1:]), type_text(field.annotation), default_text(field), field.description or ""
            )
        )
    return rows


def settings_table(path: str) -> str:
    cls = load_class(path)
    lines = [
        f"Read by `{path.replace(':', '.')}` (prefix `{cls.model_config.get('env_prefix', '')}`).",
        "",
        "| variable | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for row in settings_of(cls):
        also = f" (also `{'`, `'.join(row.aliases)}`)" if row.aliases else ""
        meaning = _cell(row.description) + also
        lines.append(f"| `{row.variable}` | {_type_cell(row.type)} | {_cell(row.default)} | {meaning} |")
    return "\n".join(lines)


def all_variables() -> set[str]:
    """Every ``FERRY_*`` variable some settings class reads."""
    names: set[str] = set()
    for path in SETTINGS_CLASSES:
        cls = load_class(path)
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            names.update(env_names(prefix, name, field))
    return names


def _type_cell(text: str) -> str:
    """A type in a table cell: a union's members apart, since a pipe inside a code span breaks the table."""
    return " or ".join(f"`{member}`" for member in text.split(" | "))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- events ------------------------------------------------------------------------------------


def event_catalogue() -> str:
    """A section per event type (topic, key, fields), then the parts the events are made of."""
    from shared.events import EVENT_TYPES, Event, Frozen

    parts: dict[str, type[BaseModel]] = {}
    sections = []
    for type_name, cls in EVENT_TYPES.items():
        key_doc = _first_line(cls.partition_key, f"{cls.__name__}.partition_key")
        sections.append(
            "\n".join(
                [
                    f"### `{type_name}`",
                    "",
                    f"`{cls.__name__}`: {_first_line(cls, cls.__name__)}",
                    "",
                    f"- topic: `ferry.{cls.topic}` (`FERRY_TOPIC_PREFIX`); dead letters: `ferry.{cls.topic}.dlq`",
                    f"- key: {key_doc}",
                    "",
                    _fields_table(cls, parts, Frozen),
                ]
            )
        )
    lines = ["## Event types", "", *sections, "## Parts", ""]
    seen: set[str] = set()
    while parts:
        name, part = parts.popitem()
        if name in seen or issubclass(part, Event):
            continue
        seen.add(name)
        lines += [f"### `{name}`", "", _first_line(part, name), "", _fields_table(part, parts, Frozen), ""]
    return "\n".join(lines)


def _first_line(documented: Any, name: str) -> str:
    """The first line of a docstring: what the catalogue says about a type or its key."""
    paragraph = (documented.__doc__ or "").strip().split("\n\n")[0]
    if not paragraph:
        raise ValueError(f"{name} has no docstring: the event catalogue is generated from it")
    return " ".join(line.strip() for line in paragraph.splitlines())


def _fields_table(cls: type[BaseModel], parts: dict[str, type[BaseModel]], base: type[BaseModel]) -> str:
    rows = ["| field | type | required / default | constraints and meaning |", "| --- | --- | --- | --- |"]
    for name, field in cls.model_fields.items():
        for model in _models_in(field.annotation):
            if issubclass(model, base):
                parts.setdefault(model.__name__, model)
        required = "required" if field.is_required() else default_text(field)
        notes = [note for item in field.metadata for note in _constraints(item)]
        meaning = "; ".join(filter(None, [field.description or "", ", ".join(notes)]))
        rows.append(f"| `{name}` | {_type_cell(type_text(field.annotation))} | {required} | {_cell(meaning)} |")
    return "\n".join(rows) + "\n"


CONSTRAINTS = {
    "ge": "≥ {}",
    "gt": "> {}",
    "le": "≤ {}",
    "lt": "< {}",
    "min_length": "length ≥ {}",
    "max_length": "length ≤ {}",
    "pattern": "matches `{}`",
}


def _constraints(item: Any) -> Iterator[str]:
    for attribute, text in CONSTRAINTS.items():
        value = getattr(item, attribute, None)
        if value is not None:
            yield text.format(value)


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


# --- REST APIs ---------------------------------------------------------------------------------


def openapi_document(service: str, workdir: Path) -> dict[str, Any]:
    """The OpenAPI document of a service's FastAPI app, built with test doubles (no Kafka, no database)."""
    builders: dict[str, Callable[[Path], Any]] = {
        "registry": _registry_app,
        "gateway": _gateway_app,
        "evaluator": _evaluator_app,
        "monitor": _monitor_app,
        "console": _console_app,
    }
    document: dict[str, Any] = builders[service](workdir).openapi()
    return document


def _registry_app(workdir: Path) -> Any:
    from sqlalchemy.orm import sessionmaker

    from services.registry.adapters.memory import MemoryDatabase
    from services.registry.entrypoints.api import ApiDeps, create_app
    from services.registry.settings import RegistrySettings
    from shared.artifacts import ArtifactStore

    deps = ApiDeps(
        read_sessions=sessionmaker(), uow_factory=MemoryDatabase().uow, artifacts=ArtifactStore(str(workdir))
    )
    return create_app(RegistrySettings(), deps)


def _gateway_app(workdir: Path) -> Any:
    from services.gateway.bootstrap import bootstrap
    from services.gateway.entrypoints.api import create_app
    from services.gateway.settings import GatewaySettings
    from shared.settings import FerrySettings

    settings = GatewaySettings(ferry=FerrySettings(home=workdir, artifact_root=str(workdir)), device="cpu")
    return create_app(bootstrap(settings, follow_kafka=False)).api


def _evaluator_app(workdir: Path) -> Any:
    import time

    from services.evaluator.domain.rollout import BakeBook
    from services.evaluator.entrypoints.api import create_app

    return create_app(BakeBook(), clock=time.time)


class _NoPublisher:
    """The monitor's publisher, for a document: nothing is published while it is built."""

    def publish(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("documentation only")

    def publish_batch(self, *args: Any, **kwargs: Any) -> list[Exception | None]:
        raise RuntimeError("documentation only")

    def close(self) -> None:
        pass


def _monitor_app(workdir: Path) -> Any:
    from services.monitor.bootstrap import bootstrap
    from services.monitor.entrypoints.api import create_app
    from services.monitor.settings import MonitorSettings
    from shared.settings import FerrySettings

    service = bootstrap(MonitorSettings(ferry=FerrySettings(home=workdir)), publisher=_NoPublisher())
    return create_app(service.api_deps())


def _console_app(workdir: Path) -> Any:
    from services.console.bootstrap import bootstrap
    from services.console.entrypoints.api import create_app
    from services.console.settings import ConsoleSettings
    from shared.runtime import Runtime
    from shared.settings import FerrySettings

    runtime = Runtime("console")  # its clients connect on first use: building the app reaches nothing
    deps = bootstrap(ConsoleSettings(ferry=FerrySettings(home=workdir), tokens_file=None), runtime)
    return create_app(deps, runtime)


def api_reference(service: str, document: dict[str, Any]) -> str:
    """A table of a service's operations, then each operation's parameters, body and answers."""
    lines = [
        f"OpenAPI {document.get('openapi')} document of **{document['info']['title']}** "
        f"({len(document['paths'])} paths; the running service serves it at `/openapi.json`, with a UI at `/docs`).",
        "",
        "| method | path | summary | auth |",
        "| --- | --- | --- | --- |",
    ]
    details = []
    for path, method, operation in operations(document):
        auth = "bearer token" if operation.get("security") else ""
        summary = _cell(operation.get("summary", ""))
        lines.append(f"| `{method.upper()}` | `{path}` | {summary} | {auth} |")
        details.append(_operation_details(path, method, operation))
    return "\n".join(lines + [""] + details)


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "delete", "patch"}:
                yield path, method, operation


def _operation_details(path: str, method: str, operation: dict[str, Any]) -> str:
    lines = [f"#### `{method.upper()} {path}`", ""]
    if operation.get("description"):
        lines += [operation["description"].strip(), ""]
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        kind = schema.get("type") or _ref_name(schema) or "value"
        required = "required" if parameter.get("required") else "optional"
        text = _cell(parameter.get("description", ""))
        lines.append(f"- {parameter['in']} `{parameter['name']}` ({kind}, {required}) {text}".rstrip())
    body = operation.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        lines.append(f"- body `{media}`: {_ref_name(content.get('schema', {})) or 'JSON'}")
    answers = ", ".join(f"`{code}`" for code in operation.get("responses", {}))
    lines += [f"- answers: {answers}", ""]
    return "\n".join(lines)


def _ref_name(schema: dict[str, Any]) -> str:
    ref = schema.get("$ref") or next((s.get("$ref") for s in schema.get("anyOf", []) if "$ref" in s), "")
    return ref.rsplit("/", 1)[-1]


# --- layout ----------------------------------------------------------------------------------

ROOMS = ("domain", "handlers", "service", "adapters", "entrypoints", "bootstrap", "settings")


def service_layout() -> str:
    """A row per service: which rooms it has (a module or a package), and what else lives beside them."""
    from shared.services import SERVICES

    lines = [
        f"| service | {' | '.join(ROOMS)} | also |",
        f"| --- | {' | '.join('---' for _ in ROOMS)} | --- |",
    ]
    for spec in SERVICES:
        folder = ROOT / "services" / spec.name
        cells = [_room(folder, room) for room in ROOMS]
        known = {f"{room}.py" for room in ROOMS} | set(ROOMS) | {"__init__.py", "__pycache__"}
        others = sorted(
            f"`{path.name}/`" if path.is_dir() else f"`{path.name}`"
            for path in folder.iterdir()
            if path.name not in known and not path.name.endswith(".pyc")
        )
        lines.append(f"| `{spec.name}` | {' | '.join(cells)} | {', '.join(others)} |")
    return "\n".join(lines)


def _room(folder: Path, room: str) -> str:
    module, package = folder / f"{room}.py", folder / room
    if package.is_dir():
        names = sorted(path.stem for path in package.glob("*.py") if path.stem != "__init__")
        return f"`{room}/` ({', '.join(names)})"
    if not module.exists():
        return "-"
    if room == "handlers" and not re.search(r"^HANDLERS\b", module.read_text(), re.MULTILINE):
        return "`handlers.py` (no `HANDLERS` table)"
    return f"`{module.name}`"


# --- pages -------------------------------------------------------------------------------------


class Generator:
    """Expands the markers of a page; OpenAPI documents are built once per generator."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.documents: dict[str, dict[str, Any]] = {}

    def document(self, service: str) -> dict[str, Any]:
        if service not in self.documents:
            folder = self.workdir / service
            folder.mkdir(parents=True, exist_ok=True)
            self.documents[service] = openapi_document(service, folder)
        return self.documents[service]

    def expand(self, markdown: str) -> str:
        def replace(match: re.Match[str]) -> str:
            kind, arg = match["kind"], match["arg"]
            if kind == "settings":
                return settings_table(arg)
            if kind == "events":
                return event_catalogue()
            if kind == "layout":
                return service_layout()
            return api_reference(arg, self.document(arg))

        return MARKER.sub(replace, markdown)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", required=True, help="folder for the expanded pages and the OpenAPI documents")
    args = parser.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as workdir:
        generator = Generator(Path(workdir))
        for page in sorted(DOCS.rglob("*.md")):
            target = out / page.relative_to(DOCS)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(generator.expand(page.read_text()))
        for service in API_SERVICES:
            (out / f"{service}.openapi.json").write_text(json.dumps(generator.document(service), indent=2) + "\n")
    print(f"wrote the expanded pages and {len(API_SERVICES)} OpenAPI documents to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
