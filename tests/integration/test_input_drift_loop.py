"""Input drift end to end on the real broker and PostgreSQL: the real trainer trains digits, the registry keeps
the version's input reference (the training split's per-feature bins), and the real monitor, fed
``inference.logged`` records, measures the logged pixels against it: inputs as in training stay quiet,
inverted intensities drift feature by feature over REST and fire InputDrift once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from monitor_support import AlertWatcher, active, base_env, log_inputs, short_rules, start_monitor
from support import ServiceProcess, wait_for

from shared.datasets import load_dataset, split
from shared.events import Hyperparameters, TrainingRequested
from shared.input_reference import build_input_reference
from shared.kafka import KafkaPublisher
from shared.registry_client import RegistryClient
from shared.registry_errors import RegistryNotFound
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WINDOW_ROWS = 300
QUICK = Hyperparameters(epochs=3, hidden_sizes=[32], learning_rate=1e-2, patience=2)


def _trained_version(client: RegistryClient) -> Any:
    try:
        return client.version("digits", 1)
    except RegistryNotFound:
        return None


def drift_of(monitor_url: str) -> dict[str, Any] | None:
    answer = httpx.get(f"{monitor_url}/api/v1/models/digits/drift", timeout=10)
    if answer.status_code == 404:
        return None
    [version] = answer.json()["versions"]
    return version


def measured(monitor_url: str, corner: list[int]) -> dict[str, Any] | None:
    """The drift of version 1 once the whole window is measured and feature 0's bin counts are ``corner``."""
    found = drift_of(monitor_url)
    if found is None or found["rows"] != WINDOW_ROWS or found["features"][0]["live_counts"] != corner:
        return None
    return found


def evaluations_after(monitor_url: str, seen: str) -> bool:
    """True once the monitor evaluated InputDrift after ``seen`` (an RFC 3339 time)."""
    rules = httpx.get(f"{monitor_url}/api/v1/rules", timeout=10).json()["rules"]
    [rule] = [rule for rule in rules if rule["name"] == "InputDrift"]
    return rule["last_evaluation"] is not None and rule["last_evaluation"] > seen


def test_a_trained_versions_reference_measures_logged_inputs_and_inverted_pixels_fire_once(
    ferry_settings: FerrySettings, fresh_database_url: str, tmp_path: Path
) -> None:
    env = base_env(ferry_settings, tmp_path / "home")
    registry = ServiceProcess(
        "registry",
        {**env, "FERRY_DATABASE_URL": fresh_database_url, "FERRY_REGISTRY_RELAY_IDLE_S": "0.05"},
        tmp_path / "registry.log",
    ).start()
    trainer_env = env | {
        "FERRY_TRAINER_CONSUMER_GROUP": f"{ferry_settings.topic_prefix}trainer",
        "FERRY_TRAINER_METRICS_PORT": "0",
        "FERRY_TRAINER_BUDGET_S": "300",
        "FERRY_REGISTRY_URL": registry.url,
    }
    trainer = ServiceProcess("trainer", trainer_env, tmp_path / "trainer.log").start(wait=False)
    publisher, watcher, client = KafkaPublisher(ferry_settings, source="tests"), AlertWatcher(ferry_settings), None
    processes = [registry, trainer]
    try:
        publisher.publish(TrainingRequested(model_name="digits", dataset="sklearn:digits", hyperparameters=QUICK))
        client = RegistryClient.connect(registry.url)
        version = wait_for(lambda: _trained_version(client), timeout_s=300, what="the trained version registered")
        train = split(load_dataset("sklearn:digits")).train.features
        assert version.input_reference == build_input_reference(train, "input")  # through event, table and REST

        monitor, url = start_monitor(
            env,
            tmp_path,
            rules_file=str(short_rules(tmp_path / "rules.yaml")),
            targets=f"registry={registry.url}",
            registry_url=registry.url,
            input_window_rows=str(WINDOW_ROWS),
        )
        processes.append(monitor)
        rng = np.random.default_rng(7)
        log_inputs(publisher, train[rng.choice(len(train), WINDOW_ROWS)], version=1)  # as in training
        quiet = wait_for(lambda: measured(url, [WINDOW_ROWS, 0]), what="the logged window measured")
        assert len(quiet["features"]) == 64
        assert quiet["score"] < 0.3 and active(url, "InputDrift", "pending") == active(url, "InputDrift") == []

        inverted = 16.0 - train[rng.choice(len(train), WINDOW_ROWS)]  # the same digits, intensities inverted
        log_inputs(publisher, inverted, version=1)
        [fired] = wait_for(lambda: watcher.of("InputDrift", "fired"), what="InputDrift on Kafka")
        assert (fired.model_name, fired.version, fired.labels) == ("digits", 1, {"model": "digits", "version": "1"})
        assert fired.value > fired.threshold == 0.3
        # Pixel 0 is 0 in every training image (one edge, every row in the first bin): 16 in every inverted one.
        shifted = wait_for(lambda: measured(url, [0, WINDOW_ROWS]), what="the inverted window measured")
        assert shifted["score"] > 0.3 and shifted["drifted_features"] > 19
        assert shifted["features"][0]["drifted"] and shifted["features"][0]["p_value"] < 1e-6

        [firing] = active(url, "InputDrift")
        wait_for(lambda: evaluations_after(url, firing["fired_at"]), what="another evaluation after firing")
        assert len(active(url, "InputDrift")) == 1
        assert len(watcher.of("InputDrift", "fired")) == 1  # fired once, however many ticks it stays drifting
    finally:
        codes = [process.stop() for process in reversed(processes)]
        publisher.close()
        watcher.close()
        if client is not None:
            client.close()
    assert codes == [0] * len(codes)
