"""The gateway's access log file: appended to, rotated past its size, reopened when another process rotated it."""

from __future__ import annotations

import json
from pathlib import Path

from services.gateway.adapters.access_log import AccessLog, RotatingFile


def test_lines_go_to_the_file_and_rotate_past_the_size(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "gateway-access.log"
    file = RotatingFile(path, max_bytes=400, backups=2)
    log = AccessLog(file)
    for number in range(12):
        log.record(f"r{number}", "iris", 1, "champion", 200, "ok", 0.5)
        log.flush()
    file.close()
    kept = [path, path.with_name(path.name + ".1"), path.with_name(path.name + ".2")]
    assert all(each.exists() for each in kept) and not path.with_name(path.name + ".3").exists()
    lines = [json.loads(line) for each in reversed(kept) for line in each.read_text().splitlines()]
    ids = [line["request_id"] for line in lines]
    assert ids == sorted(ids, key=lambda request_id: int(request_id[1:]))  # oldest first, nothing reordered
    assert ids[-1] == "r11" and lines[-1]["status"] == 200


def test_a_file_rotated_by_another_process_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "gateway-access.log"
    file = RotatingFile(path, max_bytes=10_000_000, backups=1)
    file.write("first\n")
    file.flush()
    path.rename(tmp_path / "gateway-access.log.1")  # what another gateway process's rotation does
    file.write("second\n")
    file.flush()
    file.close()
    assert path.read_text() == "second\n" and (tmp_path / "gateway-access.log.1").read_text() == "first\n"
