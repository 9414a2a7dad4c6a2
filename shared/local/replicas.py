"""N processes of a service under ``make up``: ``FERRY_REPLICAS=registry=2,gateway=3`` and their ports.

Replica 1 of a service is the process ``make up`` always ran: its program name is the service's, it
keeps the service's configured port, and the other services find the service through its URL
(``FERRY_<NAME>_URL``). Replica k > 1 is program ``<name>-<k>`` on a port chosen free at its first
start and kept in ``<home>/supervisor/replica-ports.json``, so a later ``up`` finds it where it was.
Base-plus-offset ports would collide: the services' default ports are consecutive (8080-8084).
Each replica keeps its local state under ``<home>/<name>-<k>`` (``FERRY_REPLICA``, read through
``FerrySettings.state_dir``): two processes never share one SQLite delivery log or scratch folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.local.ports import free_port
from shared.services import ServiceSpec

REPLICAS_ENV = "FERRY_REPLICAS"
MAX_REPLICAS = 16


class ReplicasError(ValueError):
    """FERRY_REPLICAS cannot be used; the message names the variable and the bad entry."""


def parse_replicas(text: str, known: Iterable[str]) -> dict[str, int]:
    """``name=count,...`` → {name: count}; a service not named runs once. Raises ReplicasError."""
    names = set(known)
    counts: dict[str, int] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, sep, count = (piece.strip() for piece in entry.partition("="))
        if not sep or not count.isdigit():
            raise ReplicasError(f"{REPLICAS_ENV}: each entry is service=count, got {entry!r}")
        if name not in names:
            raise ReplicasError(f"{REPLICAS_ENV}: no service named {name!r} (known: {', '.join(sorted(names))})")
        if name in counts:
            raise ReplicasError(f"{REPLICAS_ENV}: {name!r} is named twice")
        if not 1 <= int(count) <= MAX_REPLICAS:
            raise ReplicasError(f"{REPLICAS_ENV}: {name}={count}; a count is 1 to {MAX_REPLICAS}")
        counts[name] = int(count)
    return counts


@dataclass(frozen=True)
class Replica:
    """One process of a service: its program name, its number and its port."""

    spec: ServiceSpec
    index: int
    port: int

    @property
    def name(self) -> str:
        """The supervisord program (and log file) name: the service's for replica 1, else ``<name>-<k>``."""
        return self.spec.name if self.index == 1 else f"{self.spec.name}-{self.index}"

    def url(self, path: str = "", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def environment(self) -> dict[str, str]:
        """What this process's environment adds: its port and its replica number (its state folder)."""
        return {self.spec.port_env: str(self.port), "FERRY_REPLICA": str(self.index)}


class ReplicaPorts:
    """The ports of replicas 2…N, chosen free once and kept in one file of the home."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "replica-ports.json"

    def read(self) -> dict[str, int]:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in saved.items()} if isinstance(saved, dict) else {}

    def assign(self, names: Iterable[str], taken: Iterable[int]) -> dict[str, int]:
        """The kept port of each name, a fresh free one (never in ``taken``) for a new name."""
        ports = self.read()
        used = set(taken) | set(ports.values())
        changed = False
        for name in names:
            if name not in ports:
                port = free_port()
                while port in used:
                    port = free_port()
                ports[name], changed = port, True
                used.add(port)
        if changed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(ports, indent=1, sort_keys=True))
        return ports


def replicas_of(
    specs: Iterable[ServiceSpec], counts: Mapping[str, int], ports: ReplicaPorts, *, assign: bool = True
) -> list[Replica]:
    """Every process of ``specs``: replica 1 on the service's port, the others on their kept ports.

    ``assign=False`` only reads: a replica without a kept port yet is left out (``ferry status`` of a
    home that never ran it)."""
    specs = list(specs)
    extra = [f"{spec.name}-{k}" for spec in specs for k in range(2, counts.get(spec.name, 1) + 1)]
    kept = ports.assign(extra, taken=[spec.port for spec in specs]) if assign else ports.read()
    found = []
    for spec in specs:
        found.append(Replica(spec, 1, spec.port))
        for k in range(2, counts.get(spec.name, 1) + 1):
            if f"{spec.name}-{k}" in kept:
                found.append(Replica(spec, k, kept[f"{spec.name}-{k}"]))
    return found


def scrape_targets(replicas: Iterable[Replica]) -> str:
    """``FERRY_MONITOR_TARGETS`` for every process: ``job=url`` with the service as job, once per replica."""
    return ",".join(f"{r.spec.name}={r.url(r.spec.metrics_path)}" for r in replicas)
