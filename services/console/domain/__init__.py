"""The console's own logic, free of I/O: what an action will do, in words; what a report's plots show."""

from __future__ import annotations


class SourceDown(Exception):
    """A source of the console did not answer (or answered nonsense); the page shows ``notice`` instead."""

    def __init__(self, source: str, detail: str, *, state: str = "unreachable") -> None:
        super().__init__(f"{source} {state}: {detail}")
        self.source = source
        self.detail = detail
        self.state = state

    @property
    def notice(self) -> str:
        return f"{self.source} {self.state}: {self.detail}"


class NotFound(Exception):
    """The model, version or evaluation asked for does not exist."""
