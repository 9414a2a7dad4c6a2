"""Dynamic batching: concurrent requests for one version share one ``session.run``.

A request joins the open batch. The batch leaves when it holds ``max_batch_size`` rows, or when its
oldest request has waited ``max_delay_ms`` (0: at the next turn of the event loop, which still gathers
every request that arrived in the same turn). While a run is in progress, new requests gather into the
next batch, so batches grow with the load and a lone request waits for nobody. A run that takes longer
than ``inline_below_ms`` (on average) happens on the version's own thread (ONNX Runtime releases the
GIL); shorter ones run on the event loop itself, where handing off to a thread and back would cost more
than the run (two context switches, far more on a busy machine).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from services.gateway.domain import BatchConfig, batch_take, split_offsets

Feeds = dict[str, np.ndarray]
Runner = Callable[[Feeds], list[np.ndarray]]
_CLOCK_SLACK_S = 0.001  # the loop's timers have millisecond resolution: one may fire that much early


@dataclass
class _Queued:
    feeds: Feeds
    rows: int
    future: asyncio.Future[list[np.ndarray]]
    queued_at: float
    deadline: float | None  # on the loop's clock; the future fails with TimeoutError past it


class Batcher:
    """The batching queue of one loaded version; create and use it on the event loop's thread."""

    def __init__(
        self,
        run: Runner,
        config: BatchConfig,
        *,
        batchable: bool = True,
        name: str = "version",
        on_batch: Callable[[int], None] | None = None,
        on_run: Callable[[int, float, float], None] | None = None,
        inline_below_ms: float = 1.0,
    ) -> None:
        """``on_batch(requests)`` when a batch leaves; ``on_run(requests, seconds queued in all, seconds of
        the run)`` when its run has ended (the statistics extension's queue and compute times)."""
        self._run = run
        self._max_rows = config.max_batch_size if batchable else 1
        self._delay_s = config.max_delay_ms / 1000 if batchable else 0.0
        self._batchable = batchable
        self._on_batch = on_batch or (lambda size: None)
        self._on_run = on_run
        self._queue: list[_Queued] = []
        self._queued_rows = 0
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._running: list[_Queued] = []  # the batch in the run now
        # One timer for the nearest deadline of every request here, not one per request: a timer per request
        # costs the event loop a handle made, armed and cancelled each time (bench/gateway_bench.py --profile).
        self._expiry: asyncio.TimerHandle | None = None
        self._inline_below_s = inline_below_ms / 1000
        self._run_s = 0.0  # moving average of a run's time
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}")

    @property
    def depth(self) -> int:
        """Requests waiting for a run (not those in the run now)."""
        return len(self._queue)

    @property
    def batchable(self) -> bool:
        """Whether requests share runs (every tensor has a batch axis): a request's rows are its first axis."""
        return self._batchable

    async def submit(self, feeds: Feeds, timeout_s: float | None = None) -> list[np.ndarray]:
        """The outputs for these inputs, computed in some batch; TimeoutError when they are not there within
        ``timeout_s``. Cancellation and time-outs leave the batch unharmed (the request's place is dropped)."""
        loop = asyncio.get_running_loop()
        rows = int(next(iter(feeds.values())).shape[0]) if self._batchable and feeds else 1
        deadline = None if timeout_s is None else loop.time() + timeout_s
        item = _Queued(feeds, rows, loop.create_future(), time.perf_counter(), deadline)
        self._queue.append(item)
        self._queued_rows += rows
        if self._queued_rows >= self._max_rows:
            self._dispatch()
        elif self._timer is None and not self._running:
            self._timer = (
                loop.call_later(self._delay_s, self._dispatch) if self._delay_s else loop.call_soon(self._dispatch)
            )
        if deadline is not None and (self._expiry is None or deadline < self._expiry.when()):
            self._expire_at(loop, deadline)
        return await item.future

    def _expire_at(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Fail the requests whose deadline has passed, queued or in the run; then wait for the next deadline."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time() + _CLOCK_SLACK_S
        following: float | None = None
        for item in (*self._queue, *self._running):
            if item.deadline is None or item.future.done():
                continue
            if item.deadline <= now:
                item.future.set_exception(TimeoutError())
            elif following is None or item.deadline < following:
                following = item.deadline
        if following is not None:
            self._expire_at(loop, following)

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue = [item for item in self._queue if not item.future.done()]  # drop the cancelled
        self._queued_rows = sum(item.rows for item in self._queue)
        if self._running or not self._queue:
            return  # the run in progress dispatches again when it ends
        taken = batch_take([item.rows for item in self._queue], self._max_rows)
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        self._queued_rows -= sum(item.rows for item in batch)
        self._running = batch
        self._on_batch(len(batch))
        dispatched = time.perf_counter()
        queued_s = sum(dispatched - item.queued_at for item in batch)
        feeds = [item.feeds for item in batch]
        if self._inline:
            self._finished(batch, *self._timed(feeds))
            self._ran(len(batch), queued_s, dispatched)
            return
        work = asyncio.get_running_loop().run_in_executor(self._executor, self._timed, feeds)

        def done(result: asyncio.Future[tuple[list[np.ndarray] | None, BaseException | None]]) -> None:
            self._finished(batch, *result.result())
            self._ran(len(batch), queued_s, dispatched)

        work.add_done_callback(done)

    def _ran(self, requests: int, queued_s: float, dispatched: float) -> None:
        if self._on_run is not None:
            self._on_run(requests, queued_s, time.perf_counter() - dispatched)

    def _timed(self, all_feeds: list[Feeds]) -> tuple[list[np.ndarray] | None, BaseException | None]:
        """Run one batch; its outputs or its error. The run's time decides where the next batch runs."""
        started = time.thread_time()  # CPU time: a busy machine's preemptions do not count as the run's
        try:
            if len(all_feeds) == 1:
                outputs, error = self._run(all_feeds[0]), None
            else:
                merged = {name: np.concatenate([feeds[name] for feeds in all_feeds]) for name in all_feeds[0]}
                outputs, error = self._run(merged), None
        except Exception as failure:  # noqa: BLE001 - handed to every request of the batch
            outputs, error = None, failure
        self._run_s = 0.8 * self._run_s + 0.2 * (time.thread_time() - started)
        return outputs, error

    @property
    def _inline(self) -> bool:
        """Runs shorter than the thread hand-off they would need go on the event loop itself."""
        return self._run_s < self._inline_below_s

    def _finished(self, batch: list[_Queued], outputs: list[np.ndarray] | None, error: BaseException | None) -> None:
        self._running = []
        if outputs is None:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error or RuntimeError("the run gave no outputs"))
        else:
            offsets = split_offsets([item.rows for item in batch]) if len(batch) > 1 else [(0, batch[0].rows)]
            for item, (start, stop) in zip(batch, offsets, strict=True):
                if not item.future.done():
                    item.future.set_result(outputs if len(batch) == 1 else [out[start:stop] for out in outputs])
        if self._queue and self._timer is None:
            # Those that queued during the run have waited at least that long: they go at the next turn.
            self._timer = asyncio.get_running_loop().call_soon(self._dispatch)

    def close(self) -> None:
        """Release the runner thread once nothing is queued or running (the fleet drains first)."""
        if self._expiry is not None:
            self._expiry.cancel()
        self._executor.shutdown(wait=False)
