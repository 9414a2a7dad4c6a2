"""Every command the README and docs/ show exists: ``ferry`` verbs and flags, ``make`` targets, ``FERRY_*``
variables, local links, and each ``curl`` against the OpenAPI document of the service it calls."""

from __future__ import annotations

import argparse
import ast
import builtins
import importlib
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.cli import build_parser
from shared.services import SERVICES
from tools import docgen

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
VARIABLE = re.compile(r"\bFERRY_[A-Z0-9_]*[A-Z0-9]\b(?![<*])")

# Variables read outside the settings classes, each with the file that proves it is read there.
OTHER_VARIABLES = {
    "FERRY_FAULT_POINT": "shared/faults.py",
    "FERRY_FAULT_REPORT": "shared/faults.py",
    "FERRY_ROOT": "deploy/grafana/provisioning/dashboards/ferry.yaml",  # read by Grafana
    "FERRY_GRAFANA_WEBHOOK_TOKEN": "deploy/grafana/provisioning/alerting/ferry-contact-points.yaml",  # read by Grafana
    "FERRY_HTTP_CLIENT_LOG_LEVEL": "shared/telemetry.py",
    "FERRY_GATEWAY_URL": "shared/ops_common.py",
    "FERRY_MONITOR_URL": "shared/ops_common.py",
    "FERRY_TRAINER_JOB_REQUEST": "services/trainer/adapters/pytorchjob.py",  # a PyTorchJob pod's request
}


@dataclass(frozen=True)
class Command:
    page: str
    line: str
    words: list[str]


def page_name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def code_blocks(language: set[str]) -> Iterator[tuple[Path, str]]:
    for page in PAGES:
        for block in FENCE.finditer(page.read_text()):
            if block["lang"] in language:
                yield page, block["body"]


def command_lines(body: str, console: bool) -> Iterator[str]:
    """The commands of a block: ``$ `` lines of a console block, every line of a script; continuations joined."""
    pending = ""
    for raw in body.splitlines():
        if pending:
            line = pending + " " + raw.strip()
        elif console:
            if not raw.startswith("$ "):
                continue
            line = raw[2:]
        else:
            line = raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1].rstrip()
            continue
        pending = ""
        if line.strip() and not line.strip().startswith("#"):
            yield line.strip()


def segments(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line: split at pipes, ``&&``, ``;``; comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    current: list[str] = []
    for token in lexer:
        if token in {"|", "||", "&&", ";", "&"}:
            if current:
                yield current
            current = []
        else:
            current.append(token)
    if current:
        yield current


def shell_commands() -> list[Command]:
    found = []
    for page, body in code_blocks(SHELL_LANGUAGES):
        console = "\n$ " in "\n" + body
        for line in command_lines(body, console):
            for words in segments(line):
                found.append(Command(page_name(page), line, words))
    return found


def inline_spans() -> Iterator[tuple[Path, str]]:
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        for span in INLINE.findall(text):
            yield page, span


def ferry_words(words: list[str]) -> list[str] | None:
    """The arguments of a ``ferry`` command (``ferry``, ``.venv/bin/ferry``), else None."""
    if words and Path(words[0]).name == "ferry":
        return words[1:]
    return None


# --- ferry -------------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def unknown_verbs_and_flags(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """Verbs and ``--flags`` of ``words`` that the parser does not have (positional values are not judged)."""
    problems = []
    for word in words:
        choices = _subparsers(parser)
        if choices and not word.startswith("-"):
            if word not in choices:
                if re.fullmatch(r"[a-z][a-z-]*", word):
                    problems.append(f"no verb {word!r}")
                return problems
            parser = choices[word]
            continue
        flag = re.match(r"^\[?(--[a-z0-9-]+)", word)
        if flag and flag[1] not in parser._option_string_actions:
            problems.append(f"no flag {flag[1]} for '{parser.prog}'")
    return problems


def test_every_ferry_command_in_a_code_block_parses() -> None:
    parser, _ = build_parser()
    checked = 0
    for command in shell_commands():
        words = ferry_words(command.words)
        if words is None:
            continue
        checked += 1
        try:
            parser.parse_args(words)
        except SystemExit as exit:
            assert exit.code == 0, f"{command.page}: `{command.line}` does not parse"
    assert checked >= 10


def test_every_ferry_verb_and_flag_named_in_prose_exists() -> None:
    parser, _ = build_parser()
    problems = []
    for page, span in inline_spans():
        words = span.split()
        args = ferry_words(words)
        if args is not None:
            problems += [f"{page_name(page)}: `{span}`: {problem}" for problem in unknown_verbs_and_flags(parser, args)]
    assert not problems


def test_the_checker_finds_a_verb_or_flag_that_does_not_exist() -> None:
    parser, _ = build_parser()
    assert unknown_verbs_and_flags(parser, ["stack", "status", "--json"]) == ["no flag --json for 'ferry stack status'"]
    assert unknown_verbs_and_flags(parser, ["deploy"]) == ["no verb 'deploy'"]
    assert unknown_verbs_and_flags(parser, ["status", "--json"]) == []


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["compare", "--help"], ["monitor", "--help"]])
def test_help_runs(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: ferry" in done.stdout


def test_ferry_schemas_prints_and_writes_every_event_type(tmp_path: Path) -> None:
    from shared.events import EVENT_TYPES

    printed = subprocess.run(
        [sys.executable, "-m", "shared.cli", "schemas"], capture_output=True, text=True, timeout=120, check=True
    )
    assert set(json.loads(printed.stdout)) == set(EVENT_TYPES)
    subprocess.run([sys.executable, "-m", "shared.cli", "schemas", "--out", str(tmp_path)], timeout=120, check=True)
    assert {path.name for path in tmp_path.iterdir()} == {f"{name}.schema.json" for name in EVENT_TYPES}


# --- make, variables, links --------------------------------------------------------------------


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def test_every_make_target_shown_exists() -> None:
    targets = make_targets()
    named = [
        (command.page, word)
        for command in shell_commands()
        if command.words[0] == "make"
        for word in command.words[1:]
        if "=" not in word and not word.startswith("-")
    ]
    named += [
        (page_name(page), word)
        for page, span in inline_spans()
        if span.startswith("make ")
        for words in segments(span)
        if words[0] == "make"
        for word in words[1:]
        if re.fullmatch(r"[a-z][a-z-]*", word)
    ]
    assert len(named) >= 10
    assert [(page, target) for page, target in named if target not in targets] == []


def test_the_docs_target_builds_strictly_into_an_ignored_folder() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^docs:.*\n\t.*mkdocs build --strict", makefile, re.MULTILINE)
    assert "make docs" in (ROOT / ".ci" / "run").read_text()
    site_dir = re.search(r"^site_dir: (\S+)", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert site_dir and site_dir[1].startswith(".ferry/")  # .ferry*/ is git-ignored


def test_every_ferry_variable_named_is_read_by_the_code() -> None:
    known = docgen.all_variables()
    for variable, source in OTHER_VARIABLES.items():
        assert variable in (ROOT / source).read_text(), f"{variable} is no longer read in {source}"
    known |= set(OTHER_VARIABLES)
    unknown = {
        (page_name(page), variable)
        for page in PAGES
        for variable in VARIABLE.findall(page.read_text())
        if variable not in known
    }
    assert unknown == set()


def test_the_variable_check_would_see_a_stale_name() -> None:
    assert VARIABLE.findall("set `FERRY_GATEWAY_BATCH_DELAY` and FERRY_<NAME>_URL") == ["FERRY_GATEWAY_BATCH_DELAY"]
    assert "FERRY_GATEWAY_BATCH_DELAY" not in docgen.all_variables()


def test_every_settings_class_is_documented() -> None:
    declared = set()
    for source in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        for name in re.findall(r"^class (\w+)\(BaseSettings\):", source.read_text(), re.MULTILINE):
            module = ".".join(source.relative_to(ROOT).with_suffix("").parts)
            declared.add(f"{module}:{name}")
    assert declared == set(docgen.SETTINGS_CLASSES)
    assert {spec.port_env for spec in SERVICES} <= docgen.all_variables()


def test_every_local_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(FENCE.sub("", page.read_text())):
            if re.match(r"^(https?:|mailto:|#)", target):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page_name(page)}: {target}")
    assert broken == []


def test_python_examples_compile_and_import_what_exists() -> None:
    checked = 0
    for page, body in code_blocks({"python"}):
        tree = ast.parse(body, filename=page_name(page))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{page_name(page)}: {node.module} has no {alias.name}"
                checked += 1
        defined = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        defined |= {
            a.asname or a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in n.names
        }
        defined |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        defined |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}  # a function's parameters
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        assert used - defined - set(dir(builtins)) == set(), f"{page_name(page)}: undefined names"
    assert checked >= 1


# --- curl against the OpenAPI documents --------------------------------------------------------


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    """Each HTTP service's OpenAPI document, by its default port."""
    generator = docgen.Generator(tmp_path_factory.mktemp("openapi"))
    ports = {spec.name: spec.default_port for spec in SERVICES}
    return {ports[name]: generator.document(name) for name in docgen.API_SERVICES}


@dataclass(frozen=True)
class Curl:
    page: str
    line: str
    method: str
    port: int
    path: str
    headers: tuple[str, ...]
    has_body: bool


def curl_calls() -> list[Curl]:
    calls = []
    for command in shell_commands():
        if command.words[0] != "curl":
            continue
        words = command.words
        method, headers, has_body, url = "", [], False, None
        for index, word in enumerate(words):
            following = words[index + 1] if index + 1 < len(words) else ""
            if word == "-X":
                method = following
            elif word == "-H":
                headers.append(following.lower())
            elif word in {"-d", "--data", "--data-binary"}:
                has_body = True
            elif re.match(r"^(http://)?(localhost|127\.0\.0\.1):\d+", word):
                url = word
        assert url, f"{command.page}: `{command.line}` calls no local service"
        found = re.match(r"^(?:http://)?[^:/]+:(\d+)([^?]*)", url)
        assert found
        method = method or ("POST" if has_body else "GET")
        calls.append(Curl(command.page, command.line, method, int(found[1]), found[2], tuple(headers), has_body))
    return calls


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any] | None:
    for template, item in document["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            found: dict[str, Any] | None = item.get(method.lower())
            return found
    return None


def test_every_curl_calls_an_operation_its_service_has(documents: dict[int, dict[str, Any]]) -> None:
    calls = curl_calls()
    assert len(calls) >= 20
    trainer = next(spec for spec in SERVICES if spec.name == "trainer")
    missing = []
    for call in calls:
        if call.port == trainer.default_port:
            assert call.path == trainer.metrics_path, f"{call.page}: the trainer serves only /metrics"
            continue
        assert call.port in documents, f"{call.page}: `{call.line}`: no service on port {call.port}"
        if operation(documents[call.port], call.method, call.path) is None:
            missing.append(f"{call.page}: {call.method} {call.path}")
    assert missing == []


def test_every_write_carries_its_token_and_content_type(documents: dict[int, dict[str, Any]]) -> None:
    problems = []
    for call in curl_calls():
        if call.has_body and not any(header.startswith("content-type: application/json") for header in call.headers):
            problems.append(f"{call.page}: `{call.line}`: a body without its content type")
        found = operation(documents.get(call.port, {"paths": {}}), call.method, call.path)
        needs_token = bool(found and found.get("security"))
        shown_refused = re.search(r"#.*\b401\b", call.line)  # the example of a write refused without a token
        if needs_token and not shown_refused and not any(h.startswith("authorization: bearer ") for h in call.headers):
            problems.append(f"{call.page}: `{call.line}`: a write without its bearer token")
    assert problems == []


def test_the_curl_checks_see_a_missing_path_and_a_missing_token(documents: dict[int, dict[str, Any]]) -> None:
    registry = next(spec.default_port for spec in SERVICES if spec.name == "registry")
    assert operation(documents[registry], "GET", "/api/v1/models/digits/deployment") is not None
    assert operation(documents[registry], "GET", "/api/v1/models/digits/nothing") is None
    write = operation(documents[registry], "POST", "/api/v1/models/digits/deployment")
    assert write is not None and write.get("security")


def test_every_path_parameter_is_declared(documents: dict[int, dict[str, Any]]) -> None:
    """OpenAPI tools reject an operation whose path names a parameter it does not declare."""
    undeclared = []
    for port, document in documents.items():
        for path, method, found in docgen.operations(document):
            declared = {p["name"] for p in found.get("parameters", []) if p["in"] == "path"}
            if set(re.findall(r"\{([^}]+)\}", path)) != declared:
                undeclared.append(f"{port} {method.upper()} {path}")
    assert undeclared == []


def test_every_generated_part_expands(tmp_path: Path) -> None:
    generator = docgen.Generator(tmp_path)
    for page in PAGES:
        text = page.read_text()
        expanded = generator.expand(text)
        assert docgen.MARKER.search(expanded) is None
        for kind in docgen.MARKER.findall(text):
            assert len(expanded) > len(text), f"{page_name(page)}: {kind} expanded to nothing"
