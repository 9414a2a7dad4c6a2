"""Versions made from verified bytes: a warmed-up session (``adapters/onnx_runtime.py``) wrapped with its
batching queue and metrics, or the same wrapper with no session yet (a cold version, loaded on demand)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.gateway.adapters.metrics import GatewayMetrics
from services.gateway.adapters.onnx_runtime import OnnxLoader, OnnxModel
from services.gateway.batching import Batcher
from services.gateway.domain import VersionSpec, batchable
from services.gateway.fleet import LoadedVersion
from services.gateway.settings import GatewaySettings
from services.gateway.statistics import InferenceStatistics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionFactory:
    """Sessions from verified bytes, and the loaded versions around them, with the gateway's settings."""

    settings: GatewaySettings
    metrics: GatewayMetrics
    models: OnnxLoader
    statistics: InferenceStatistics | None = None

    def open(self, model_name: str, spec: VersionSpec, data: bytes) -> OnnxModel:
        """A warmed-up session of ``data``; LoadFailed when any step refuses it. Call off the event loop."""
        config = self.settings.batch_config(model_name)
        sizes = (
            (1, config.max_batch_size)
            if batchable(spec.signature) and self.settings.warmup_batch and config.max_batch_size > 1
            else (1,)
        )
        model = self.models.load(data, spec.signature, warmup_batches=sizes)
        log.info("loaded %s v%s on %s", model_name, spec.version, model.provider)
        return model

    def wrap(self, model_name: str, spec: VersionSpec, model: OnnxModel) -> LoadedVersion:
        """``model`` as a servable version, with its batching queue (build it on the event loop's thread)."""
        config = self.settings.batch_config(model_name)
        statistics = self.statistics
        self.metrics.prepare(model_name, spec.version)
        batcher = Batcher(
            model.run,
            config,
            batchable=batchable(spec.signature),
            name=f"{model_name}-v{spec.version}",
            on_batch=lambda size: self.metrics.batch(model_name, spec.version, size),
            on_run=None
            if statistics is None
            else lambda requests, queued_s, run_s: statistics.executed(
                model_name, spec.version, requests=requests, queued_s=queued_s, run_s=run_s
            ),
            inline_below_ms=self.settings.inline_run_ms,
        )
        return LoadedVersion(model_name=model_name, spec=spec, model=model, batcher=batcher)

    def cold(self, model_name: str, spec: VersionSpec) -> LoadedVersion:
        """A version known and not loaded: the residency loads its session for its first request."""
        return self.wrap(model_name, spec, OnnxModel.cold(spec.signature))
