"""Where the gateway's time goes: ``gateway_bench.py --profile`` runs one gateway worker (metrics, access
log, rate limits and canary routing on, as the bench measures it), drives it with wrk and the bench's
request, and samples it meanwhile with py-spy (attached to the serving process once it is warm, so start-up
is not counted). The samples are aggregated by function and printed twice: by own time (the function was
the innermost Python frame) and by total time (the function was anywhere on the stack, counted once per
sample), each as a share of the samples in which the process was busy (a thread waiting on a lock, such
as the deployments worker's, is left out).

Native code (uvloop, httptools, ONNX Runtime, orjson) has no frame of its own here: its time is the
Python function's that called it, or ``(no Python frame)`` when the event loop runs C code alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
# One frame of py-spy's raw (collapsed) output: "function (file:line)", or "function (file)" without lines.
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
NO_FRAME = "(no Python frame)"
# Innermost frames of a thread that waits (py-spy can count a thread blocked in a lock as busy): not work.
WAITING = ("Condition.wait (threading.py)",)


@dataclass(frozen=True)
class Profile:
    """Samples aggregated by function: own and total counts, out of ``samples``."""

    samples: int
    own: Counter[str]
    total: Counter[str]


def function_of(frame: str) -> str:
    """``function (file:line)`` → ``function (file)``: one entry per function, whatever line was running."""
    match = FRAME.match(frame.strip())
    return f"{match['function']} ({match['file']})" if match else frame.strip()


def aggregate(raw: str, skip: Callable[[str], bool] = lambda function: False) -> Profile:
    """Fold py-spy's raw output (``frame;frame;... count`` per line, outermost first) by function; frames
    for which ``skip`` is true (the thread's name py-spy puts first, the process) are left out."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        functions = [function_of(frame) for frame in stack.split(";")]
        functions = [function for function in functions if not skip(function)] or [NO_FRAME]
        if functions[-1] in WAITING:
            continue
        samples += count
        own[functions[-1]] += count
        for function in set(functions):
            total[function] += count
    return Profile(samples, own, total)


def _not_code(function: str) -> bool:
    """py-spy's first frames name the process and the thread, not code."""
    return function.startswith(("process ", "thread ")) or FRAME.match(function) is None


def print_profile(profile: Profile, top: int, title: str) -> None:
    """Two tables, top ``top`` entries each: by own time, and by total time without the frames found in every
    sample (the server's outermost, whose total says nothing; the event loop's own time is kept)."""
    print(f"\n{title}: {profile.samples} samples while busy\n")
    everywhere = {function for function, count in profile.total.items() if count >= profile.samples}
    for label, counts, left_out in (("own", profile.own, set()), ("total", profile.total, everywhere)):
        print(f"| {label} time | function (file) |")
        print("| ---: | --- |")
        ranked = [(function, count) for function, count in counts.most_common() if function not in left_out]
        for function, count in ranked[:top]:
            print(f"| {100 * count / max(profile.samples, 1):.1f} % | `{function}` |")
        print()


def record(pid: int, seconds: float, rate: int, out_file: Path) -> subprocess.Popen[bytes]:
    """py-spy attached to ``pid`` for ``seconds``, ``rate`` samples a second, raw output to ``out_file``."""
    command = [PY_SPY, "record", "--pid", str(pid), "--duration", f"{max(1, round(seconds))}", "--rate", str(rate)]
    command += ["--format", "raw", "--output", str(out_file)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def profile_server(
    server: Any,
    drive: Callable[[], Any],
    seconds: float,
    rate: int,
    out_file: Path,
) -> tuple[Profile, Any]:
    """Sample ``server`` (warm, answering) for ``seconds`` while ``drive()`` loads it; the profile and what
    the load generator measured meanwhile (under the profiler: slower than without it)."""
    spy = record(server.process.pid, seconds, rate, out_file)
    measured: list[Any] = []
    driver = threading.Thread(target=lambda: measured.append(drive()))
    driver.start()
    output, _ = spy.communicate(timeout=seconds + 120)
    driver.join()
    if spy.returncode != 0 or not out_file.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {output.decode(errors='replace')[-400:]}")
    return aggregate(out_file.read_text(), skip=_not_code), measured[0]
