"""Fault points: an armed process reports the point and exits as a crash would; unarmed, nothing happens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shared.faults import ENV, FAULT_EXIT_CODE, REPORT_ENV, fault_point, reached

SCRIPT = """
from shared.faults import fault_point
for step in range(5):
    print(f"step {step}", flush=True)
    fault_point("after.step")
print("finished", flush=True)
"""


def run(armed: str | None, report: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, REPORT_ENV: str(report)}
    env.pop(ENV, None)
    if armed is not None:
        env[ENV] = armed
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60)


def test_an_armed_point_reports_itself_and_exits_like_a_crash(tmp_path: Path) -> None:
    result = run("after.step", tmp_path / "report")
    assert result.returncode == FAULT_EXIT_CODE
    assert result.stdout.split() == ["step", "0"]
    assert reached(tmp_path / "report") == ["after.step"]
    assert "ferry fault point reached: after.step" in result.stderr


def test_the_nth_hit_can_be_armed(tmp_path: Path) -> None:
    result = run("after.step@3", tmp_path / "report")
    assert result.returncode == FAULT_EXIT_CODE
    assert result.stdout.splitlines() == ["step 0", "step 1", "step 2"]
    assert reached(tmp_path / "report") == ["after.step"]


def test_unarmed_or_armed_elsewhere_nothing_happens(tmp_path: Path) -> None:
    for armed in (None, "some.other.point"):
        result = run(armed, tmp_path / "report")
        assert result.returncode == 0
        assert result.stdout.splitlines()[-1] == "finished"
    assert reached(tmp_path / "report") == []
    fault_point("after.step")  # this test process is not armed: returns
