"""The console's own logic, free of I/O: what an action will do, in words; what a report's plots show."""

from __future__ import annotations


class SourceDown(Exception):
    """A source of the console did not answer (or answered nonsense); the page shows ``notice`` instead."""

    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source} unreachable: {detail}")
        self.source = source
        self.detail = detail

    @property
    def notice(self) -> str:
        return f"{self.source} unreachable: {self.detail}"


class NotFound(Exception):
    """The model, version or evaluation asked for does not exist."""
