"""``make image``: the Containerfile's promises, and tools/image.sh choosing podman (chroot isolation) or docker.

No container engine runs here: the engines are stand-ins on PATH that record how they were called. Building
the image itself is opt-in (``make image``, then ``make image-smoke``), never in CI: it is several GB.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from shared.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = (ROOT / "Containerfile").read_text()


def fake_engine(folder: Path, name: str) -> Path:
    """An executable ``name`` that appends its arguments to ``<folder>/<name>.calls``."""
    folder.mkdir(exist_ok=True)
    engine = folder / name
    engine.write_text(f'#!/bin/sh\necho "$@" >> "{folder}/{name}.calls"\n')
    engine.chmod(0o755)
    return engine


def build(tmp_path: Path, engines: list[str], **env: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    bin_dir = tmp_path / "bin"
    for name in engines:
        fake_engine(bin_dir, name)
    bin_dir.mkdir(exist_ok=True)
    # Only the stand-ins and the basic tools the script uses: no real podman or docker can be found.
    for tool in ("sed", "head", "dirname", "bash"):
        found = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        ["bash", str(ROOT / "tools" / "image.sh")],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir), **env},
    )
    calls = {name: (bin_dir / f"{name}.calls").read_text() for name in engines if (bin_dir / f"{name}.calls").exists()}
    return result, calls


def test_podman_is_preferred_and_builds_with_chroot_isolation(tmp_path: Path) -> None:
    result, calls = build(tmp_path, ["podman", "docker"], VARIANT="cuda", BASE_IMAGE="ferry-base:bookworm")
    assert result.returncode == 0, result.stderr
    assert set(calls) == {"podman"}
    assert calls["podman"].startswith("build --isolation=chroot --file Containerfile")
    assert (
        "--build-arg VARIANT=cuda" in calls["podman"]
        and "--build-arg BASE_IMAGE=ferry-base:bookworm" in calls["podman"]
    )
    assert result.stdout.strip() == "ferry:0.1.0-cuda"


def test_docker_builds_when_podman_is_absent(tmp_path: Path) -> None:
    result, calls = build(tmp_path, ["docker"])
    assert result.returncode == 0, result.stderr
    assert calls["docker"].startswith("build --file Containerfile --build-arg VARIANT=cpu")
    assert "isolation" not in calls["docker"] and "BASE_IMAGE" not in calls["docker"]


def test_the_hosts_ca_bundle_reaches_pip_as_a_build_secret_never_a_layer(tmp_path: Path) -> None:
    bundle = tmp_path / "proxy-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    result, calls = build(tmp_path, ["podman"], PIP_CERT=str(bundle))
    assert result.returncode == 0, result.stderr
    assert f"--secret id=ca-bundle,src={bundle}" in calls["podman"]
    (tmp_path / "none").mkdir()
    result, calls = build(tmp_path / "none", ["podman"], CA_BUNDLE=str(tmp_path / "absent.pem"))
    assert result.returncode == 0 and "--secret" not in calls["podman"]  # no bundle, no secret
    # Every step that installs mounts the secret, and nothing copies or exports it into the image.
    installing = [step for step in re.split(r"\n(?=[A-Z]+ )", CONTAINERFILE) if "pip install" in step]
    assert installing and all("--mount=type=secret,id=ca-bundle" in step for step in installing)
    assert "ca-bundle" not in "".join(re.findall(r"^(?:COPY|ENV|ADD) .*$", CONTAINERFILE, re.MULTILINE))


def test_no_engine_says_what_to_install(tmp_path: Path) -> None:
    result, _ = build(tmp_path, [])
    assert result.returncode == 1 and "neither podman nor docker" in result.stderr


def test_the_containerfile_is_multi_stage_non_root_and_pinned() -> None:
    stages = re.findall(r"^FROM (\S+)", CONTAINERFILE, re.MULTILINE)
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert re.search(r"^ARG BASE_IMAGE=\S*python:3\.11-slim", CONTAINERFILE, re.MULTILINE)
    assert re.findall(r"^USER (\S+)", CONTAINERFILE, re.MULTILINE) == ["10001:10001"]
    installs = re.findall(r"pip install ([^\n]*)", CONTAINERFILE)
    assert installs and all("-c constraints.txt" in line or "--no-deps" in line for line in installs)
    assert "cpu)" in CONTAINERFILE and "cuda)" in CONTAINERFILE


@pytest.mark.parametrize("path", ["shared", "services", "deploy/alerts", "pyproject.toml", "constraints.txt"])
def test_what_the_image_copies_exists_and_is_not_ignored(path: str) -> None:
    assert (ROOT / path).exists()
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert path not in ignored and path.split("/")[0] not in ignored


def test_the_chart_runs_the_image_as_its_user() -> None:
    values = (ROOT / "deploy" / "helm" / "ferry" / "values.yaml").read_text()
    assert "runAsUser: 10001" in values and "runAsGroup: 10001" in values
    smoke = (ROOT / "tools" / "image-smoke.sh").read_text()
    assert all(spec.name in smoke for spec in SERVICES)
    assert os.access(ROOT / "tools" / "image-smoke.sh", os.X_OK)
