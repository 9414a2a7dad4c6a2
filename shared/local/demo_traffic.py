"""What ``ferry demo`` needs beyond the CLI: REST helpers, and Open Inference Protocol traffic.

The traffic is the held-out test split of ``sklearn:digits`` (the rows no trainer has read), sent to
the gateway as OIP v2 JSON requests, each with a route key so that canary routing is visible and
sticky. The rows are cycled in order, so the predicted classes follow the evaluator's reference
distribution and the drift rule stays quiet.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.datasets import load_dataset, split


def get_json(url: str) -> Any:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.json()


@dataclass(frozen=True)
class Answer:
    """One inference answer: which version served it, why, what it predicted and the true label."""

    status: int
    version: str | None
    route: str | None
    predicted: int | None
    label: int

    @property
    def correct(self) -> bool:
        return self.predicted == self.label


class DigitsTraffic:
    """OIP v2 requests for one model at the gateway, over the digits test split."""

    def __init__(self, gateway_url: str, model: str = "digits") -> None:
        data = split(load_dataset("sklearn:digits")).test
        self._rows = [[float(value) for value in row] for row in data.features]
        self._labels = [int(label) for label in data.labels]
        self._url = gateway_url.rstrip("/")
        self._model = model
        self._client = httpx.Client(timeout=10)

    def close(self) -> None:
        self._client.close()

    def infer(self, index: int, *, route_key: str, version: int | None = None) -> Answer:
        """Send test row ``index`` (cycled); ``version`` pins one."""
        row = index % len(self._rows)
        path = f"/v2/models/{self._model}" + (f"/versions/{version}" if version else "") + "/infer"
        body = {
            "id": f"demo-{route_key}-{index}",
            "inputs": [
                {"name": "input", "shape": [1, len(self._rows[row])], "datatype": "FP32", "data": self._rows[row]}
            ],
        }
        response = self._client.post(self._url + path, json=body, headers={"x-ferry-route-key": route_key})
        predicted = None
        if response.status_code == 200:
            probabilities = response.json()["outputs"][0]["data"]
            predicted = max(range(len(probabilities)), key=probabilities.__getitem__)
        return Answer(
            status=response.status_code,
            version=response.headers.get("x-ferry-model-version"),
            route=response.headers.get("x-ferry-route"),
            predicted=predicted,
            label=self._labels[row],
        )

    def spread(self, keys: int) -> list[tuple[str | None, str | None]]:
        """One request per route key ``user-0 … user-<keys-1>``: the (version, route) that served each."""
        return [
            (answer.version, answer.route) for answer in (self.infer(n, route_key=f"user-{n}") for n in range(keys))
        ]


@dataclass
class BackgroundTraffic:
    """Keeps a steady stream of requests going (for the monitor's windows) until stopped."""

    traffic: DigitsTraffic
    every_s: float = 0.05
    answers: Counter[tuple[int, str | None, str | None]] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="demo-traffic", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sent = 0
        while not self._stop.wait(self.every_s):
            try:
                answer = self.traffic.infer(sent, route_key=f"bg-{sent % 50}")
            except httpx.HTTPError:
                continue  # the gateway restarting or busy: the demo's traffic just goes on
            self.answers[(answer.status, answer.version, answer.route)] += 1
            sent += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
