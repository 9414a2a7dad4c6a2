"""MkDocs hooks: expand the ``<!-- ferry:... -->`` markers of each page from the code (tools/docgen.py)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # mkdocs loads hooks by path, not as a package

from tools.docgen import Generator  # noqa: E402

_state: dict[str, Any] = {}


def on_pre_build(config: Any) -> None:
    workdir = tempfile.TemporaryDirectory(prefix="ferry-docs-")
    _state["workdir"] = workdir
    _state["generator"] = Generator(Path(workdir.name))


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    generator: Generator = _state["generator"]
    return generator.expand(markdown)


def on_post_build(config: Any) -> None:
    _state.pop("workdir").cleanup()
