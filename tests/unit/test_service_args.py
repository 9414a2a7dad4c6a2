"""``python -m services.<name> --help`` prints the service's variables and exits before anything starts."""

from __future__ import annotations

import importlib
import sys

import pytest

from shared.services import SERVICES

SERVICE_NAMES = [spec.name for spec in SERVICES]


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_help_lists_the_services_variables_and_starts_nothing(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    main = importlib.import_module(f"services.{name}.__main__").main
    monkeypatch.setattr(sys, "argv", [f"services.{name}", "--help"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 0
    out = capsys.readouterr().out
    spec = next(spec for spec in SERVICES if spec.name == name)
    assert out.startswith(f"usage: python -m services.{name}")
    assert spec.port_env in out and "FERRY_KAFKA_BOOTSTRAP" in out  # its own variables, and the shared ones


@pytest.mark.parametrize("name", ["gateway", "trainer"])
def test_an_argument_is_refused_with_status_2(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    main = importlib.import_module(f"services.{name}.__main__").main
    monkeypatch.setattr(sys, "argv", [f"services.{name}", "--port", "9"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2
    assert "unrecognized arguments: --port 9" in capsys.readouterr().err
