"""The gateway's pure rules: routing hash, token buckets, shedding order, batch plans, signatures."""

from __future__ import annotations

import asyncio
import re
import threading

import numpy as np
import pytest

from services.gateway.batching import Batcher
from services.gateway.domain import (
    Admission,
    BatchConfig,
    InvalidInput,
    RateLimiter,
    batch_take,
    check_inputs,
    choose_version,
    previous_after,
    retry_after_header,
    route_fraction,
    split_offsets,
)
from services.gateway.sample_models import classifier_signature


def test_route_fraction_is_stable_and_spread() -> None:
    assert route_fraction("user-42") == route_fraction("user-42")
    fractions = [route_fraction(f"key-{i}") for i in range(5000)]
    assert all(0 <= f < 1 for f in fractions)
    assert abs(np.mean(fractions) - 0.5) < 0.02


@pytest.mark.parametrize("weight", [0.1, 0.3, 0.5])
def test_canary_share_follows_the_weight_and_is_sticky(weight: float) -> None:
    chosen = [choose_version(1, 2, weight, f"customer-{i}") for i in range(5000)]
    share = sum(route == "canary" for _, route in chosen) / len(chosen)
    assert abs(share - weight) <= 0.03
    assert chosen[:100] == [choose_version(1, 2, weight, f"customer-{i}") for i in range(100)]


def test_no_challenger_or_zero_weight_always_serves_the_champion() -> None:
    assert {choose_version(1, None, 0.5, f"k{i}") for i in range(200)} == {(1, "champion")}
    assert {choose_version(1, 2, 0.0, f"k{i}") for i in range(200)} == {(1, "champion")}


def test_token_bucket_allows_a_burst_then_refuses_with_the_wait() -> None:
    limiter = RateLimiter(rate=10, burst=3)
    assert [limiter.check("a", 100.0) for _ in range(3)] == [0, 0, 0]
    wait = limiter.check("a", 100.0)
    assert wait == pytest.approx(0.1)
    assert limiter.check("b", 100.0) == 0  # buckets are per client
    assert limiter.check("a", 100.2) == 0  # refilled at 10 a second
    assert retry_after_header(wait) == "1"


def test_rate_limiter_off_at_rate_zero_and_bounded_in_clients() -> None:
    assert RateLimiter(rate=0, burst=0).check("a", 0.0) == 0
    limiter = RateLimiter(rate=1, burst=1, max_clients=2)
    for client in ("a", "b", "c"):
        limiter.check(client, 0.0)
    assert limiter.check("a", 0.0) == 0  # "a" was forgotten: a fresh, full bucket


def test_admission_sheds_shadow_then_canary_before_champion() -> None:
    admission = Admission(max_inflight=10, shadow_share=0.5, canary_share=0.8)
    assert all(admission.try_enter("champion") for _ in range(5))
    assert not admission.try_enter("shadow")
    assert all(admission.try_enter("canary") for _ in range(3))
    assert not admission.try_enter("canary")
    assert all(admission.try_enter("champion") for _ in range(2))
    assert not admission.try_enter("champion")
    admission.leave()
    assert admission.try_enter("champion")


def test_batch_plan_fills_up_to_the_bound_and_never_starves_a_big_request() -> None:
    assert batch_take([1, 1, 1, 1], 3) == 3
    assert batch_take([2, 2, 2], 5) == 2
    assert batch_take([10, 1], 4) == 1
    assert batch_take([1], 64) == 1
    assert split_offsets([1, 3, 2]) == [(0, 1), (1, 4), (4, 6)]


def test_previous_version_is_kept_only_after_a_promotion_forward() -> None:
    assert previous_after(1, 2, None) == 1
    assert previous_after(2, 1, 1) is None  # a rollback keeps no fallback newer than itself
    assert previous_after(2, 3, 1) == 2
    assert previous_after(2, 2, 1) == 1  # a weight change keeps the fallback
    assert previous_after(None, 1, None) is None


def test_inputs_are_checked_against_the_signature() -> None:
    signature = classifier_signature(4, 3)
    check_inputs(signature, [("input", "FP32", (7, 4))])
    for given, reason in [
        ([("pixels", "FP32", (1, 4))], "unknown input tensor"),
        ([("input", "FP64", (1, 4))], "datatype FP64"),
        ([("input", "FP32", (1, 5))], "shape [1, 5]"),
        ([("input", "FP32", (4,))], "shape [4]"),
        ([("input", "FP32", (1, 4)), ("input", "FP32", (1, 4))], "given twice"),
    ]:
        with pytest.raises(InvalidInput, match=re.escape(reason)):
            check_inputs(signature, given)


def test_batcher_merges_concurrent_requests_into_one_run_and_splits_the_answers() -> None:
    runs: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        runs.append(len(feeds["x"]))
        return [feeds["x"] * 2]

    async def scenario() -> list[list[np.ndarray]]:
        batcher = Batcher(run, BatchConfig(max_batch_size=8, max_delay_ms=0))
        requests = [np.full((rows, 2), float(i), np.float32) for i, rows in enumerate([1, 2, 1, 3])]
        answers = await asyncio.gather(*(batcher.submit({"x": rows}) for rows in requests))
        batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert runs == [7]  # the four requests of one loop turn, in one run
    for i, (rows, answer) in enumerate(zip([1, 2, 1, 3], answers, strict=True)):
        assert answer[0].shape == (rows, 2) and (answer[0] == 2.0 * i).all()


def test_batcher_runs_at_most_max_batch_size_rows_and_keeps_going_after_a_failure() -> None:
    runs: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        runs.append(len(feeds["x"]))
        if len(runs) == 1:
            raise RuntimeError("boom")
        return [feeds["x"]]

    async def scenario() -> list[object]:
        batcher = Batcher(run, BatchConfig(max_batch_size=2, max_delay_ms=1))
        one = np.zeros((1, 2), np.float32)
        results = await asyncio.gather(*(batcher.submit({"x": one}) for _ in range(5)), return_exceptions=True)
        batcher.close()
        return results

    results = asyncio.run(scenario())
    assert max(runs) <= 2 and sum(runs) == 5
    assert sum(isinstance(result, RuntimeError) for result in results) == 2
    assert sum(isinstance(result, list) for result in results) == 3


def test_batcher_fails_a_request_past_its_deadline_and_answers_the_rest_of_its_batch() -> None:
    release = threading.Event()

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        release.wait(30)  # held in the runner's thread until the late request has failed
        return [feeds["x"] * 2]

    async def scenario() -> tuple[BaseException | None, list[np.ndarray], list[np.ndarray]]:
        batcher = Batcher(run, BatchConfig(max_batch_size=4, max_delay_ms=0), inline_below_ms=0)
        one = np.ones((1, 2), np.float32)
        patient = asyncio.ensure_future(batcher.submit({"x": one * 3}, 60.0))
        late = asyncio.ensure_future(batcher.submit({"x": one}, 0.01))  # nearer than the first deadline
        untimed = asyncio.ensure_future(batcher.submit({"x": one * 5}))
        failure = await asyncio.gather(late, return_exceptions=True)
        release.set()
        answers = await patient, await untimed
        batcher.close()
        return failure[0], *answers

    failure, patient, untimed = asyncio.run(scenario())
    assert isinstance(failure, TimeoutError)
    assert (patient[0] == 6.0).all() and (untimed[0] == 10.0).all()  # the run went on for the others
