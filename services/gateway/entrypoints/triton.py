"""Triton's HTTP extensions that ``tritonclient`` users call: model configuration, statistics and the model
repository (index, load, unload). (Classification, the fifth, is part of the inference route: ``oip.py``.)

Load and unload change what this gateway serves, so they take the admin token. Load also loads the
sessions of a served model's versions that were evicted or not loaded yet (``residency.py``). Unload stops serving a
model here (its requests get a 404 that says so) and keeps the last deployment the gateway saw for it;
deployments that arrive meanwhile replace the kept one without loading anything; load serves the kept
one again. Both act on this process only: the registry's deployment is unchanged.

No ``from __future__ import annotations``: FastAPI must resolve annotations naming local objects.
"""

import asyncio
from enum import Enum
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.gateway.domain import BatchConfig, Deployment, VersionSpec, batchable
from services.gateway.fleet import LoadedVersion
from services.gateway.service import Gateway
from shared.events import TensorSpec

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "statistics", "model_repository"]
UNLOADED_REASON = "unloaded by an operator on this gateway"
REFUSED_REASON = "not loaded: its artifact or session was refused (see the gateway's log)"


def model_config(name: str, version: VersionSpec, batching: BatchConfig) -> dict[str, Any]:
    """Triton's model configuration of one loaded version: with a batch axis, ``dims`` leave it out."""
    can_batch = batchable(version.signature)

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        dims = spec.shape[1:] if can_batch else spec.shape
        data_type = "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"  # Triton's name for it
        return {"name": spec.name, "data_type": data_type, "dims": list(dims)}

    config: dict[str, Any] = {
        "name": name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [str(version.version)]}},
        "max_batch_size": batching.max_batch_size if can_batch else 0,
        "input": [tensor(spec) for spec in version.signature.inputs],
        "output": [tensor(spec) for spec in version.signature.outputs],
    }
    if can_batch and batching.max_batch_size > 1:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": int(batching.max_delay_ms * 1000)}
    return config


def repository_index(gateway: Gateway) -> list[dict[str, str]]:
    """Every model and version this gateway knows: READY when its session is loaded, LOADING while it loads,
    UNAVAILABLE (and why) when not: evicted or not loaded yet (a request loads it), refused, or unloaded."""
    entries: list[dict[str, str]] = []
    for name, state in sorted(gateway.fleet.models.items()):
        known = {version.version: version for version in state.loaded()}
        for number in sorted(set(known) | _wanted(state.deployment)):
            version = known.get(number)
            if version is None:
                entries.append(_entry(name, number, "UNAVAILABLE", REFUSED_REASON))
            else:
                entries.append(_entry(name, number, *residency_state(gateway, version)))
    for (name, number), version in sorted(gateway.fleet.pinned.items()):
        entries.append(_entry(name, number, *residency_state(gateway, version)))
    for name, deployment in sorted(gateway.fleet.unloaded.items()):
        numbers: list[int | None] = [*sorted(_wanted(deployment))] or [None]
        entries.extend(_entry(name, number, "UNAVAILABLE", UNLOADED_REASON) for number in numbers)
    return entries


def residency_state(gateway: Gateway, version: LoadedVersion) -> tuple[str, str]:
    """A known version's Triton state and reason: loaded, loading, evicted, failed, or not loaded yet."""
    residency = gateway.residency
    state = "loaded" if residency is None else residency.state_of(version)
    if state == "loaded":
        return "READY", ""
    if state == "loading":
        return "LOADING", "loading"
    if state == "evicted":
        return "UNAVAILABLE", f"evicted ({version.evicted}): loads again on its next request"
    if state == "failed" and residency is not None:
        return "UNAVAILABLE", f"its load failed: {residency.failure_of(version)}; a later request tries again"
    return "UNAVAILABLE", "not loaded yet: loads on its first request"


def _wanted(deployment: Deployment) -> set[int]:
    return {spec.version for spec in deployment.wanted()}


def _entry(name: str, version: int | None, state: str, reason: str) -> dict[str, str]:
    entry = {"name": name, "state": state, "reason": reason}
    if version is not None:
        entry["version"] = str(version)
    return entry


class RepositoryRequest(BaseModel):
    """The body ``tritonclient`` sends to load and unload; a configuration override or files are refused."""

    model_config = ConfigDict(extra="forbid")
    parameters: dict[str, Any] = Field(default_factory=dict)


async def _check_body(request: Request, allowed: set[str]) -> None:
    """``tritonclient`` sends its JSON without a content type: read it here, whatever the headers say."""
    raw = await request.body()
    if not raw.strip():
        return
    try:
        body = RepositoryRequest.model_validate_json(raw)
    except ValidationError as error:
        raise HTTPException(400, f"invalid request body: {error.errors()[0].get('msg')}") from error
    unsupported = sorted(set(body.parameters) - allowed)
    if unsupported:
        raise HTTPException(400, f"unsupported parameters {unsupported}: the gateway serves the registry's versions")


def add_triton_routes(api: FastAPI, gateway: Gateway, admin_guard: Any) -> None:
    """Add the routes; before the protocol's ``/v2/models/{name}``, which would take ``stats`` for a name."""
    _add_config_routes(api, gateway)
    _add_statistics_routes(api, gateway)
    _add_repository_routes(api, gateway, admin_guard)


def _loaded(gateway: Gateway, name: str, version: str | None) -> list[LoadedVersion]:
    """The versions served for ``name`` (None: all of them); 404 when none is."""
    state = gateway.fleet.get(name)
    if state is None or not state.loaded():
        raise HTTPException(404, str(gateway.fleet.missing(name)))
    if version is None:
        return state.loaded()
    found = state.find(int(version)) if version.isdigit() and len(version) < 10 else None
    if found is None:
        raise HTTPException(404, f"model {name!r} has no loaded version {version}")
    return [found]


def _add_config_routes(api: FastAPI, gateway: Gateway) -> None:
    tags: list[str | Enum] = ["triton extensions"]

    def config(name: str, version: str | None) -> dict[str, Any]:
        if version is None:
            state = gateway.fleet.get(name)
            chosen = (state.champion or state.challenger) if state else None
            loaded = [chosen] if chosen is not None else _loaded(gateway, name, None)
        else:
            loaded = _loaded(gateway, name, version)
        return model_config(name, loaded[0].spec, gateway.settings.batch_config(name))

    @api.get("/v2/models/{name}/config", tags=tags, summary="Model configuration (the champion's)")
    async def champion_config(name: str) -> dict[str, Any]:
        return config(name, None)

    @api.get("/v2/models/{name}/versions/{version}/config", tags=tags, summary="Configuration of one version")
    async def version_config(name: str, version: str) -> dict[str, Any]:
        return config(name, version)


def _add_statistics_routes(api: FastAPI, gateway: Gateway) -> None:
    tags: list[str | Enum] = ["triton extensions"]
    statistics = gateway.inference.statistics

    def report(name: str, version: str | None) -> dict[str, Any]:
        return statistics.report([(name, loaded.version) for loaded in _loaded(gateway, name, version)])

    @api.get("/v2/models/stats", tags=tags, summary="Inference statistics of every served version")
    async def all_stats() -> dict[str, Any]:
        wanted = [
            (name, loaded.version)
            for name, state in sorted(gateway.fleet.models.items())
            for loaded in sorted(state.loaded(), key=lambda version: version.version)
        ]
        return statistics.report(wanted)

    @api.get("/v2/models/{name}/stats", tags=tags, summary="Inference statistics of a model's served versions")
    async def model_stats(name: str) -> dict[str, Any]:
        return report(name, None)

    @api.get("/v2/models/{name}/versions/{version}/stats", tags=tags, summary="Inference statistics of one version")
    async def version_stats(name: str, version: str) -> dict[str, Any]:
        return report(name, version)


def _add_repository_routes(api: FastAPI, gateway: Gateway, admin_guard: Any) -> None:
    tags: list[str | Enum] = ["triton extensions"]
    guard = [Depends(admin_guard)]

    @api.post("/v2/repository/index", tags=tags, summary="Every model and version known here, and its state")
    async def index() -> list[dict[str, str]]:
        return repository_index(gateway)

    @api.post(
        "/v2/repository/models/{name}/load",
        tags=tags,
        dependencies=guard,
        summary="Serve again a model unloaded here (the last deployment this gateway saw for it)",
    )
    async def load(name: str, request: Request) -> dict[str, Any]:
        await _check_body(request, set())
        outcome = await asyncio.to_thread(gateway.deployer.load, name)
        if outcome is None:
            raise HTTPException(404, f"model {name!r} is not known on this gateway")
        state = gateway.fleet.get(name)
        if state is None or not state.loaded():
            raise HTTPException(409, f"model {name!r} could not be loaded: {REFUSED_REASON}")
        if gateway.residency is not None:  # evicted or never loaded: its sessions now
            for version in state.loaded():
                was_resident = version.resident
                failure = await gateway.residency.load_now(version)
                if failure is not None:
                    raise HTTPException(409, f"model {name!r} version {version.version} could not be loaded: {failure}")
                outcome = outcome if was_resident else "applied"
        return {"name": name, "outcome": outcome, "versions": [str(version.version) for version in state.loaded()]}

    @api.post(
        "/v2/repository/models/{name}/unload",
        tags=tags,
        dependencies=guard,
        summary="Stop serving a model on this gateway until it is loaded again",
    )
    async def unload(name: str, request: Request) -> dict[str, Any]:
        await _check_body(request, {"unload_dependents"})
        if not await asyncio.to_thread(gateway.deployer.unload, name):
            raise HTTPException(404, f"model {name!r} is not known on this gateway")
        return {"name": name, "state": "UNAVAILABLE", "reason": UNLOADED_REASON}
