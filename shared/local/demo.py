"""``ferry demo``: the whole loop on one machine.

Brings the system up exactly as ``make up`` does (the stack, the generated API token, every installed
service under supervisord), then: trains a first version (the evaluator makes it the champion), asks
the gateway for predictions, trains a second version (the evaluator judges it against the champion on
held-out data and makes it a canary), shows the canary split, lets the bake promote it, injects a
fault into it at the gateway so that the monitor's error-ratio alert fires and the evaluator rolls it
back, and prints the deployment history. Everything keeps running afterwards (``make status``,
``make down``) unless ``--down`` is given.

The demo shortens three timings so that it takes minutes, not an hour: the canary's bake
(``FERRY_EVALUATOR_BAKE_S``), the monitor's scrape interval, and the error-ratio rule's window and
``for`` (a copy of ``deploy/alerts/rules.yaml``). Variables you set yourself win.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections import Counter
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import yaml

from shared.local.demo_traffic import BackgroundTraffic, DigitsTraffic, get_json
from shared.local.stack import PROJECT_ROOT
from shared.registry_client import RegistryClient
from shared.registry_errors import RegistryNotFound
from shared.registry_models import EvaluationOut
from shared.services import installed_services, service
from shared.settings import FerrySettings
from shared.waiting import NotReady, wait_for

DEMO_BAKE_S = 20
FAST_RULE = {"name": "GatewayErrorRatio", "window": "20s", "for": "5s", "min_denominator": 10}


def demo_token(settings: FerrySettings) -> str:
    """The operator's token from the tokens file ``make up`` generated (never a well-known one)."""
    from shared.local.tokens import ensure_tokens_file, operator_token

    return operator_token(ensure_tokens_file(settings).path)


def registry_url() -> str:
    return os.environ.get("FERRY_REGISTRY_URL") or service("registry").url()


def demo_rules(settings: FerrySettings) -> Path:
    """The shipped rules, with the error-ratio rule's window and ``for`` shortened for the demo."""
    document = yaml.safe_load((PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml").read_text())
    for rule in document["rules"]:
        if rule["name"] == FAST_RULE["name"]:
            rule.update({key: value for key, value in FAST_RULE.items() if key != "name"})
    target = settings.home.absolute() / "demo" / "rules.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def set_demo_timings(settings: FerrySettings) -> None:
    """The demo's short timings and the gateway's admin token, unless the user set them."""
    os.environ.setdefault("FERRY_EVALUATOR_BAKE_S", str(DEMO_BAKE_S))
    os.environ.setdefault("FERRY_MONITOR_SCRAPE_INTERVAL_S", "1")
    os.environ.setdefault("FERRY_MONITOR_RULES_FILE", str(demo_rules(settings)))
    os.environ.setdefault("FERRY_GATEWAY_ADMIN_TOKEN", demo_token(settings))


def bring_up(settings: FerrySettings) -> int:
    """``make up`` with the demo's settings; services already running with others are restarted."""
    from shared.local.supervisor import Supervisor
    from shared.local.system import service_environment, up
    from shared.local.tokens import ensure_tokens_file, ensure_webhook_tokens_file

    set_demo_timings(settings)
    supervisor = Supervisor(settings)
    if supervisor.pid() is not None and supervisor.settings_changed(
        service_environment(settings, ensure_tokens_file(settings), ensure_webhook_tokens_file(settings))
    ):
        print("   the services run with other settings: restarting them with the demo's short timings")
        supervisor.stop()
    return up(settings)


def run_demo(settings: FerrySettings, *, down_after: bool = False) -> int:
    """The whole loop; returns the process exit code."""
    from shared.cli import main as ferry
    from shared.local.system import down

    try:
        print("1. the whole system, as `make up`: Kafka, PostgreSQL, the API token, the services")
        if bring_up(settings) != 0:
            return 1
        print("\n2. a Kafka round trip through the CloudEvents envelope")
        if ferry(["roundtrip"]) != 0:
            return 1
        services = {spec.name for spec in installed_services()}
        missing = {"registry", "trainer", "evaluator", "gateway", "monitor"} - services
        if missing:
            print(f"not installed: {', '.join(sorted(missing))}; the loop needs every service")
            return 1
        return Loop(settings).run()
    except NotReady as error:
        print(f"\nthe demo stopped waiting: {error}; see the logs in {settings.home / 'logs'}")
        return 1
    finally:
        if down_after:
            down(settings)
        else:
            print("\nFerry keeps running with the demo's short timings: `make status` shows it, `make down` stops it;")
            print(f"logs in {settings.home / 'logs'}")
            print(f"the web console: {service('console').url()}")


class Loop:
    """Steps 3 to 9: train, judge, serve, canary, bake, fault, alert, rollback."""

    def __init__(self, settings: FerrySettings) -> None:
        self.settings = settings
        self.registry = RegistryClient.connect(registry_url())
        self.gateway = service("gateway").url()
        self.monitor = service("monitor").url()
        self.model = free_model_name(self.registry)
        self.traffic = DigitsTraffic(self.gateway, self.model)

    def champion(self) -> int | None:
        return self.registry.deployment(self.model).champion

    def last_change_reason(self) -> str:
        return next(self.registry.history(self.model, page_size=1)).reason

    def run(self) -> int:
        try:
            first = self.train(3, "--epochs", "40")
            if first is None:
                return 1
            self.wait(lambda: self.champion() == first, f"v{first} to become the champion", 180)
            print(f"   the evaluator: {self.registry.evaluations(self.model, first)[0].reason}")
            self.serve(first)
            second = self.train(5, "--hidden-sizes", "512,256", "--seed", "1", "--epochs", "40")
            if second is None:
                return 1
            if not self.judge(second):
                return self.finish(first, second)
            self.canary(second)
            self.fault_and_rollback(first, second)
            return self.finish(first, second)
        finally:
            self.traffic.close()
            self.registry.close()

    def wait(self, condition: Callable[[], Any], what: str, timeout_s: float) -> Any:
        return wait_for(condition, what=what, timeout_s=timeout_s, first_s=0.5, max_s=2.0)

    def train(self, step: int, *options: str) -> int | None:
        from shared.cli import main as ferry

        command = ["train", "--model", self.model, "--dataset", "sklearn:digits", *options, "--wait-registered"]
        print(f"\n{step}. ferry {' '.join(command)}")
        if ferry(command) != 0:
            return None
        return next(self.registry.versions(self.model, page_size=1)).version

    def serve(self, version: int) -> None:
        url = f"{self.gateway}/v2/models/{self.model}/infer"
        print(f"\n4. the gateway serves v{version}: Open Inference Protocol v2 at {url}")
        self.wait(lambda: ready(self.gateway, self.model, version), f"the gateway to load v{version}", 120)
        answers = [self.traffic.infer(index, route_key=f"user-{index}") for index in range(20)]
        served = sorted({(answer.version, answer.route) for answer in answers})
        correct = sum(answer.correct for answer in answers)
        print(f"   20 test rows: served by {served}; {correct}/20 predicted right")

    def judge(self, version: int) -> bool:
        evaluation: EvaluationOut = self.wait(
            lambda: next(reversed(self.registry.evaluations(self.model, version)), None),
            f"the evaluation of v{version}",
            180,
        )
        decided = f"{evaluation.decision} {evaluation.stage or ''}".strip()
        print(f"   the evaluator decided {decided}: {evaluation.reason}")
        report = evaluation.report
        for role in ("champion", "candidate"):
            part = report.get(role) or {}
            interval = (part.get("intervals") or {}).get("accuracy") or {}
            if interval:
                print(
                    f"   {role:9} v{part.get('version')}: accuracy {interval['estimate']:.4f} "
                    f"(95% CI {interval['low']:.4f}..{interval['high']:.4f})"
                )
        comparison = (report.get("comparison") or {}).get("accuracy") or {}
        if comparison:
            difference, mcnemar = comparison["difference"], comparison.get("mcnemar") or {}
            interval = f"95% CI {difference['low']:+.4f}..{difference['high']:+.4f}"
            p_value = mcnemar.get("p_value", float("nan"))
            claim = (report.get("decision") or {}).get("claim")
            print(f"   difference {difference['estimate']:+.4f} ({interval}), McNemar p={p_value:.4f}: claim '{claim}'")
        return evaluation.decision == "promote"

    def canary(self, version: int) -> None:
        deployment = self.registry.deployment(self.model)
        print(
            f"\n6. the canary: champion v{deployment.champion}, challenger v{deployment.challenger} "
            f"at weight {deployment.canary_weight}"
        )
        self.wait(lambda: ready(self.gateway, self.model, version), f"the gateway to load v{version}", 120)
        first = self.traffic.spread(200)
        counts = Counter(first)
        print("   200 route keys: " + ", ".join(f"v{v} ({route}) {n}" for (v, route), n in sorted(counts.items())))
        sticky = self.traffic.spread(200) == first
        print(f"   the same 200 keys again: {'each key to the same version' if sticky else 'keys moved!'}")
        pinned = self.traffic.infer(0, route_key="pinned", version=version)
        print(f"   /versions/{version}/infer: served by v{pinned.version} ({pinned.route})")
        print(f"\n7. the bake: {DEMO_BAKE_S} s without a rollback alert, then the evaluator promotes v{version}")
        self.wait(lambda: self.champion() == version, f"v{version} to become the champion", DEMO_BAKE_S + 120)
        print(f"   {self.last_change_reason()}")

    def fault_and_rollback(self, previous: int, version: int) -> None:
        token = os.environ["FERRY_GATEWAY_ADMIN_TOKEN"]
        headers = {"Authorization": f"Bearer {token}"}
        fault_url = f"{self.gateway}/admin/faults/{self.model}/{version}"
        print(f"\n8. a fault: every run of v{version} fails at the gateway (PUT {fault_url} error_rate 1.0)")
        background = BackgroundTraffic(self.traffic)
        background.start()
        try:
            httpx.put(fault_url, json={"error_rate": 1.0}, headers=headers, timeout=10).raise_for_status()
            alert = self.wait(
                lambda: firing(self.monitor, "GatewayErrorRatio", self.model, version),
                "the monitor's GatewayErrorRatio alert",
                180,
            )
            print(
                f"   the monitor: {alert['rule']} firing for v{version}, value {alert['value']:.2f} > "
                f"{alert['threshold']} (action {alert['action']}): published on Kafka as an alert event"
            )
            self.wait(lambda: self.champion() == previous, f"the rollback to v{previous}", 120)
            print(f"   the evaluator: {self.last_change_reason()}")
            self.wait(lambda: ready(self.gateway, self.model, previous), f"the gateway to serve v{previous}", 60)
        finally:
            httpx.delete(fault_url, headers=headers, timeout=10)
            background.stop()
        summary = ", ".join(
            f"{status} v{v} ({route}) {count}"
            for (status, v, route), count in sorted(background.answers.items(), key=lambda item: str(item[0]))
        )
        print(f"   traffic meanwhile, by answer: {summary}")

    def finish(self, first: int, second: int) -> int:
        from shared.cli import main as ferry

        print(f"\n9. the deployment history of {self.model}, newest first")
        for entry in islice(self.registry.history(self.model, page_size=10), 10):
            serving = f"champion {entry.to_champion}, canary {entry.to_challenger or '-'}"
            print(f"   {entry.revision:>2} {entry.action:<9} {serving:<22} {entry.actor}: {entry.reason[:100]}")
        print(f"\n10. ferry compare {self.model} {first} {second}")
        return ferry(["compare", self.model, str(first), str(second)])


def ready(gateway: str, model: str, version: int) -> bool:
    try:
        return httpx.get(f"{gateway}/v2/models/{model}/versions/{version}/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def firing(monitor: str, rule: str, model: str, version: int) -> dict[str, Any] | None:
    """The monitor's firing alert of ``rule`` for this model version, if there is one."""
    for alert in get_json(f"{monitor}/api/v1/alerts")["active"]:
        labels = alert.get("labels") or {}
        if (
            alert["rule"] == rule
            and alert["state"] == "firing"
            and labels.get("model") == model
            and labels.get("version") == str(version)
        ):
            return dict(alert)
    return None


def free_model_name(registry: RegistryClient) -> str:
    """``digits`` on a fresh system; ``digits-2``, ``digits-3`` … when earlier demos left theirs."""
    for attempt in range(1, 1000):
        name = "digits" if attempt == 1 else f"digits-{attempt}"
        try:
            registry.model(name)
        except RegistryNotFound:
            return name
    raise RuntimeError("no free demo model name")


def demo_command(args: Namespace, settings: FerrySettings) -> int:
    if getattr(args, "drift", False):
        from shared.local.demo_drift import run_drift_demo

        return run_drift_demo(settings, down_after=args.down)
    return run_demo(settings, down_after=args.down)
