"""The one place that builds the console's real adapters (or takes fakes from a test), and what the
process runtime runs (``process``): the consumer loop of the training topics and the web app."""

from __future__ import annotations

import logging

import httpx

from services.console.adapters.dead_letters import DeadLetterSource
from services.console.adapters.fresh_compare import FreshCompare
from services.console.adapters.registry import RegistrySource
from services.console.adapters.runs import LiveRuns
from services.console.adapters.services import EvaluatorSource, GatewaySource, MonitorSource
from services.console.entrypoints.api import ConsoleDeps, create_app
from services.console.entrypoints.consumer import build_consumer_loop
from services.console.service import Console
from services.console.settings import TOKENS_FILE_SETTING, ConsoleSettings
from shared.credentials import parse_tokens_file
from shared.events import TrainingRequested, TrainingStatus
from shared.kafka import make_consumer, make_producer
from shared.runtime import Runtime

log = logging.getLogger("services.console")


def replay_tokens(settings: ConsoleSettings) -> dict[str, str]:
    """Token → user of the registry's tokens file; empty (replays refused) when none is configured.

    Raises InvalidTokens for a file that cannot be used: the console refuses to start, as the registry does.
    """
    if settings.tokens_file is None:
        return {}
    return parse_tokens_file(settings.tokens_file, setting=TOKENS_FILE_SETTING)


def bootstrap(settings: ConsoleSettings, runtime: Runtime, *, runs: LiveRuns | None = None) -> ConsoleDeps:
    """The console over its real sources; each client is closed with the runtime."""
    registry = RegistrySource.connect(settings.registry_url, timeout_s=settings.source_timeout_s)
    http = httpx.Client(timeout=settings.source_timeout_s)
    runtime.on_close(registry.close)
    runtime.on_close(http.close)
    console = Console(
        registry=registry,
        monitor=MonitorSource(http, settings.monitor_url),
        evaluator=EvaluatorSource(http, settings.evaluator_url),
        gateways=GatewaySource(http, settings.resolved_gateway_urls),
        dead_letters=DeadLetterSource(settings.ferry, timeout_s=settings.dead_letter_timeout_s),
        fresh=FreshCompare(
            settings.registry_url, timeout_s=settings.compare_timeout_s, latency_runs=settings.compare_latency_runs
        ),
    )
    return ConsoleDeps(console, runs or LiveRuns(), settings.ferry, replay_tokens(settings))


def process(settings: ConsoleSettings) -> Runtime:
    """The console process for the runtime; raises InvalidTokens when the tokens file cannot be used."""
    runtime = Runtime("console", shutdown_timeout_s=settings.shutdown_timeout_s)
    deps = bootstrap(settings, runtime)
    group = settings.consumer_group()
    topics = [TrainingRequested.topic, TrainingStatus.topic]
    consumer = make_consumer(settings.ferry, group, topics, auto_offset_reset="earliest")
    producer = make_producer(settings.ferry, client_id=f"{group}-dlq")
    observed = [settings.ferry.topic(TrainingRequested.topic)]  # the trainer's: it dead-letters there
    loop = build_consumer_loop(
        consumer, producer, group=group, runs=deps.runs, stop=runtime.stop_event, observed_topics=observed
    )
    runtime.worker("consumer-loop", loop.run)
    runtime.probe("consumer", loop.joined.is_set)
    runtime.on_close(lambda: producer.close(timeout=10))
    runtime.serve(create_app(deps, runtime), settings.host, settings.port)
    log.info("console on http://%s:%s, registry %s", settings.host, settings.port, settings.registry_url)
    return runtime
