"""Scratch folders of training runs: locked while a run lives, cleaned after a trainer died mid-run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from services.trainer.adapters.scratch import clean_stale_runs, run_folder
from shared.faults import FAULT_EXIT_CODE, reached
from shared.local.stack import PROJECT_ROOT

DIES_IN_A_RUN = """
import sys
from pathlib import Path
from services.trainer.adapters.scratch import run_folder
from shared.faults import fault_point
with run_folder(Path(sys.argv[1])) as folder:
    (folder / "model.onnx").write_bytes(b"half a model")
    fault_point("test.mid_run")
"""


def test_a_run_folder_is_removed_when_the_run_ends(tmp_path: Path) -> None:
    with run_folder(tmp_path) as folder:
        assert folder.is_dir() and folder.name.startswith("run-")
        (folder / "scratch.bin").write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_dead_trainers_run_folder_is_cleaned_and_a_live_one_is_kept(tmp_path: Path) -> None:
    report = tmp_path / "faults.txt"
    work = tmp_path / "work"
    env = os.environ | {"FERRY_FAULT_POINT": "test.mid_run", "FERRY_FAULT_REPORT": str(report)}
    died = subprocess.run([sys.executable, "-c", DIES_IN_A_RUN, str(work)], cwd=PROJECT_ROOT, env=env, timeout=60)
    assert died.returncode == FAULT_EXIT_CODE and reached(report) == ["test.mid_run"]
    [left] = [path for path in work.iterdir() if path.is_dir()]
    assert (left / "model.onnx").exists()  # what the killed run left behind

    with run_folder(work) as live:
        assert clean_stale_runs(work) == [left]
        assert live.is_dir()  # another trainer's run in progress is never taken
    assert list(work.iterdir()) == []


def test_an_orphaned_lock_is_removed_and_an_empty_root_is_fine(tmp_path: Path) -> None:
    assert clean_stale_runs(tmp_path / "missing") == []
    (tmp_path / "run-abc.lock").write_bytes(b"")
    assert clean_stale_runs(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
