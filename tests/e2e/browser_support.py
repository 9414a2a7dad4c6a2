"""A real Chromium (Debian's package) driven by Playwright, for the console's tests.

Playwright's own browser downloads are never used: the browser is the system's ``chromium`` (or the one
``FERRY_CHROMIUM`` names; tools/screenshots.py finds it for both). Every page opened through
:class:`Watched` records what the browser reports as a failure (a console error, an uncaught exception,
a failed request, an HTTP answer of 400 or more that the test did not expect) and the test asserts that
list is empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tools.screenshots import chromium_path


@dataclass
class Watched:
    """A page whose console errors, page errors and failed requests are collected as they happen."""

    page: Any
    problems: list[str] = field(default_factory=list)
    expected_statuses: set[int] = field(default_factory=set)

    def attach(self) -> Watched:
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)
        return self

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        # Chromium logs every 4xx/5xx fetch as a console error; one the test provoked on purpose is not a fault.
        if any(f"status of {status} " in message.text for status in self.expected_statuses):
            return
        self.problems.append(f"console error: {message.text} at {message.location}")

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        if "ERR_ABORTED" in failure and request.resource_type == "eventsource":
            return  # an event stream closed by leaving the page is no failure
        self.problems.append(f"request failed: {request.method} {request.url}: {failure}")

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.status not in self.expected_statuses:
            self.problems.append(f"HTTP {response.status} for {response.request.method} {response.url}")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium for the length of the block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()
