"""The Helm chart, checked offline by real tools: ``helm lint`` and ``helm template`` (helm built from its Go
module by tools/helm.sh) with each values file of deploy/helm/ferry/ci, every rendered object validated against
two Kubernetes releases' OpenAPI schemas and the CRDs' own (tools/kube_validate.py), and what the chart
promises read off the rendered objects. No cluster: nothing here is applied.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from services.evaluator.settings import EvaluatorSettings
from services.monitor.adapters.rules_file import read_rules
from services.monitor.provisioning import dashboard, prometheus
from services.registry.settings import RegistrySettings
from services.trainer.settings import TrainerSettings
from shared.credentials import token_weakness
from shared.kafka_access import ACCESS
from shared.services import SERVICES
from tools import docgen
from tools.kube_validate import Validator

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ferry"
VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RULES = ROOT / "deploy" / "alerts" / "rules.yaml"
NAMESPACE = "ferry"
FULLNAME = "ferry"  # the release is named ferry: the chart's fullname is the release's
LAG_SETTINGS: dict[str, type[BaseSettings]] = {
    "trainer": TrainerSettings,
    "evaluator": EvaluatorSettings,
    "registry": RegistrySettings,
}
Objects = list[dict[str, Any]]


def helm_binary() -> Path:
    """The binary tools/helm.sh builds; a missing one fails the test (never skips it), saying how to build it."""
    version = re.search(r'HELM_VERSION="([^"]+)"', (ROOT / "tools" / "helm.sh").read_text())
    assert version, "tools/helm.sh names no HELM_VERSION"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    binary = cache / "ferry" / "tools" / f"helm-{version[1]}" / "helm"
    if not binary.exists():
        pytest.fail(f"helm is not built: run `bash tools/helm.sh` (make test does; minutes, once) to get {binary}")
    return binary


def helm(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *map(str, args)], capture_output=True, text=True, timeout=120)


def render(values: Path) -> Objects:
    result = helm("template", FULLNAME, CHART, "--namespace", NAMESPACE, "-f", values)
    assert result.returncode == 0, result.stderr[-3000:]
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    """Each values file's objects, rendered once (by the file's stem: minimal-values, gpu-values, ...)."""
    return {values.stem: render(values) for values in VALUES}


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.pinned()


def of_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in objects if item["kind"] == kind}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    """The one container of a Deployment's or a Job's pods."""
    [only] = workload["spec"]["template"]["spec"]["containers"]
    return only


def test_there_are_the_three_values_files() -> None:
    assert {values.stem for values in VALUES} >= {"minimal-values", "gpu-values", "secured-values"}


@pytest.mark.parametrize("values", VALUES, ids=lambda path: path.stem)
def test_helm_lint_passes(values: Path) -> None:
    result = helm("lint", "--strict", CHART, "--namespace", NAMESPACE, "-f", values)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        ({"kafka": {"bootstrap": "kafka", "securityProtocol": "PLAINTEXT"}}, "bootstrap"),
        ({"kafka": {"bootstrap": "kafka:9092", "securityProtocol": "SASL_SSL"}}, "existingSecret"),
        ({"settings": {"FERRY_API_TOKEN": "x"}}, "FERRY_API_TOKEN"),
        ({"registry": {"settings": {"FERRY_DATABASE_URL": "postgresql://u:p@h/db"}}}, "FERRY_DATABASE_URL"),
        ({"gateway": {"replicas": 0}}, "replicas"),
        ({"monitor": {"engine": "grafana"}}, "engine"),
        ({"gpus": True}, "gpus"),
        ({"trainer": {"pytorchJob": {"enabled": True, "maxWorldSize": 0}}}, "maxWorldSize"),
    ],
)
def test_bad_values_fail_lint(tmp_path: Path, bad: dict[str, Any], said: str) -> None:
    """values.schema.json refuses them before anything renders."""
    values = tmp_path / "bad.yaml"
    values.write_text(yaml.safe_dump(bad))
    result = helm("lint", CHART, "-f", CHART / "ci" / "minimal-values.yaml", "-f", values)
    assert result.returncode != 0
    assert said in result.stdout + result.stderr


def test_every_rendered_object_is_valid_against_its_schema(rendered: dict[str, Objects], validator: Validator) -> None:
    errors = {
        f"{name}: {item['kind']}/{item['metadata']['name']}": validator.errors(item)
        for name, objects in rendered.items()
        for item in objects
    }
    assert {key: value for key, value in errors.items() if value} == {}


def test_the_validator_sees_a_misspelt_field_and_a_wrong_type(
    rendered: dict[str, Objects], validator: Validator
) -> None:
    """The check above can fail: a field no schema names, and a CRD field of the wrong type."""
    deployment = json.loads(json.dumps(of_kind(rendered["minimal-values"], "Deployment")[f"{FULLNAME}-gateway"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    assert any("readinessProbes" in error for error in validator.errors(deployment))
    scaled = json.loads(json.dumps(next(iter(of_kind(rendered["secured-values"], "ScaledObject").values()))))
    scaled["spec"]["maxReplicaCount"] = "six"
    assert any("maxReplicaCount" in error for error in validator.errors(scaled))


def test_every_service_has_a_deployment_service_probes_and_a_budget(rendered: dict[str, Objects]) -> None:
    for objects in rendered.values():
        deployments, services = of_kind(objects, "Deployment"), of_kind(objects, "Service")
        budgets, maps = of_kind(objects, "PodDisruptionBudget"), of_kind(objects, "ConfigMap")
        for spec in SERVICES:
            name = f"{FULLNAME}-{spec.name}"
            main = container(deployments[name])
            assert main["command"] == ["python", "-m", spec.module]
            assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert main["resources"]["requests"] and main["resources"]["limits"]
            # The port the container declares is the one its settings tell the process to listen on.
            assert main["ports"] == [{"name": "http", "containerPort": spec.default_port, "protocol": "TCP"}]
            assert maps[f"{name}-settings"]["data"][spec.port_env] == str(spec.default_port)
            assert services[name]["spec"]["ports"][0]["port"] == spec.default_port
            assert (
                budgets[name]["spec"]["selector"]["matchLabels"] == deployments[name]["spec"]["selector"]["matchLabels"]
            )


def test_the_services_answer_the_probes_paths() -> None:
    """Every service mounts the shared runtime's /healthz and /readyz (shared/runtime.py add_routes)."""
    for spec in SERVICES:
        api = (ROOT / "services" / spec.name / "entrypoints" / "api.py").read_text()
        assert "runtime.add_routes(" in api, spec.name
    runtime = (ROOT / "shared" / "runtime.py").read_text()
    assert '"/healthz"' in runtime and '"/readyz"' in runtime


def test_replicas_come_from_values_unless_an_autoscaler_owns_them(rendered: dict[str, Objects]) -> None:
    minimal = of_kind(rendered["minimal-values"], "Deployment")
    assert minimal[f"{FULLNAME}-registry"]["spec"]["replicas"] == 2
    assert minimal[f"{FULLNAME}-trainer"]["spec"]["replicas"] == 1
    assert "replicas" not in minimal[f"{FULLNAME}-gateway"]["spec"]  # the HPA's
    secured = of_kind(rendered["secured-values"], "Deployment")
    assert all("replicas" not in secured[f"{FULLNAME}-{name}"]["spec"] for name in LAG_SETTINGS)


def test_gpu_values_give_the_gateway_alone_a_gpu(rendered: dict[str, Objects]) -> None:
    for name, objects in rendered.items():
        for deployment_name, deployment in of_kind(objects, "Deployment").items():
            resources = container(deployment)["resources"]
            wants = name == "gpu-values" and deployment_name == f"{FULLNAME}-gateway"
            assert ("nvidia.com/gpu" in resources["limits"]) is wants, (name, deployment_name)
            assert ("nvidia.com/gpu" in resources.get("requests", {})) is wants, (name, deployment_name)
        device = of_kind(objects, "ConfigMap")[f"{FULLNAME}-gateway-settings"]["data"]["FERRY_GATEWAY_DEVICE"]
        assert device == ("cuda" if name == "gpu-values" else "cpu")
    gateway = of_kind(rendered["gpu-values"], "Deployment")[f"{FULLNAME}-gateway"]
    assert gateway["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_the_gateway_has_an_hpa(rendered: dict[str, Objects]) -> None:
    [hpa] = of_kind(rendered["gpu-values"], "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-gateway"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)


def peers(policy: dict[str, Any]) -> Iterator[dict[str, Any] | None]:
    """Each rule's sources; None for a rule without ``from`` (every source, in the cluster or outside it)."""
    for rule in policy["spec"]["ingress"]:
        if "from" not in rule:
            yield None
        yield from rule.get("from", [])


def test_only_the_gateway_is_reachable_from_outside_the_namespace(rendered: dict[str, Objects]) -> None:
    policies = of_kind(rendered["minimal-values"], "NetworkPolicy")
    assert len(policies) == len(SERVICES)
    metrics = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    for spec in SERVICES:
        policy = policies[f"{FULLNAME}-{spec.name}"]
        assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == spec.name
        sources = list(peers(policy))
        if spec.name == "gateway":
            assert sources == [None]
        else:
            # Its own namespace's pods, and Prometheus's namespace (scraping /metrics); nobody else.
            assert None not in sources and sources == [{"podSelector": {}}, metrics], spec.name


def test_scaled_objects_follow_the_real_consumer_groups_and_topics(rendered: dict[str, Objects]) -> None:
    objects = rendered["secured-values"]
    scaled, auths = of_kind(objects, "ScaledObject"), of_kind(objects, "TriggerAuthentication")
    maps = of_kind(objects, "ConfigMap")
    assert set(scaled) == {f"{FULLNAME}-{name}" for name in LAG_SETTINGS}
    for name, settings in LAG_SETTINGS.items():
        triggers = scaled[f"{FULLNAME}-{name}"]["spec"]["triggers"]
        assert {trigger["metadata"]["consumerGroup"] for trigger in triggers} == {
            settings.model_fields["consumer_group"].default
        }
        assert sorted(trigger["metadata"]["topic"] for trigger in triggers) == sorted(
            f"ferry.{topic}" for topic in ACCESS[name].reads
        )
        assert {(t["metadata"]["sasl"], t["metadata"]["tls"]) for t in triggers} == {("scram_sha512", "enable")}
        auth = auths[triggers[0]["authenticationRef"]["name"]]["spec"]
        [password] = [ref for ref in auth["secretTargetRef"] if ref["parameter"] == "password"]
        assert (password["name"], password["key"]) == ("ferry-kafka-passwords", name)
        [username] = auth["configMapTargetRef"]
        assert maps[username["name"]]["data"][username["key"]] == ("ferry-registry" if name == "registry" else name)
    assert of_kind(rendered["minimal-values"], "ScaledObject") == {}


def test_the_registry_migrates_in_a_hook_job_before_its_pods(rendered: dict[str, Objects]) -> None:
    objects = rendered["minimal-values"]
    [job] = of_kind(objects, "Job").values()
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert container(job)["command"] == ["python", "-m", "services.registry.migrate"]
    assert (ROOT / "services" / "registry" / "migrate.py").exists()
    registry = of_kind(objects, "ConfigMap")[f"{FULLNAME}-registry-settings"]["data"]
    assert registry["FERRY_REGISTRY_MIGRATE_ON_START"] == "false"


def test_every_setting_the_chart_writes_is_one_the_services_read(rendered: dict[str, Objects]) -> None:
    known = docgen.all_variables()
    for name, objects in rendered.items():
        for config in of_kind(objects, "ConfigMap").values():
            written = {key for key in config.get("data", {}) if key.startswith("FERRY_")}
            assert written <= known, (name, config["metadata"]["name"], written - known)


def secret_values(objects: Objects) -> list[str]:
    """Every token of the generated Secrets, decoded."""
    values = []
    for secret in of_kind(objects, "Secret").values():
        for encoded in secret.get("data", {}).values():
            values += [line.split()[-1] for line in base64.b64decode(encoded).decode().splitlines() if line.strip()]
    return values


def test_tokens_are_generated_strong_and_never_in_a_config_map(rendered: dict[str, Objects]) -> None:
    objects = rendered["minimal-values"]
    tokens = secret_values(objects)
    # admin's, and Alertmanager's twice: as a tokens-file line the monitor reads, and alone for Alertmanager.
    assert len(tokens) == 3 and all(token_weakness(token) is None for token in tokens)
    assert len(set(tokens)) == 2
    secret = of_kind(objects, "Secret")[f"{FULLNAME}-api-tokens"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    configs = json.dumps([item for item in objects if item["kind"] != "Secret"])
    assert not [token for token in tokens if token in configs]
    # With existing Secrets the chart writes none, and mounts the one it was given.
    secured = rendered["secured-values"]
    assert of_kind(secured, "Secret") == {}
    registry = of_kind(secured, "Deployment")[f"{FULLNAME}-registry"]["spec"]["template"]["spec"]
    assert {"name": "tokens", "secret": {"secretName": "ferry-api-tokens", "defaultMode": 0o400}} in registry["volumes"]
    # The gateway reads the same file for who may post feedback; the trainer and evaluator take no credential.
    for name, mounted in (("gateway", True), ("trainer", False), ("evaluator", False)):
        spec = of_kind(secured, "Deployment")[f"{FULLNAME}-{name}"]["spec"]["template"]["spec"]
        assert any(volume["name"] == "tokens" for volume in spec["volumes"]) is mounted, name
    gateway_settings = of_kind(secured, "ConfigMap")[f"{FULLNAME}-gateway-settings"]["data"]
    assert gateway_settings["FERRY_GATEWAY_FEEDBACK_TOKENS_FILE"] == "/etc/ferry/tokens/tokens"


def test_the_database_url_and_kafka_password_come_only_from_secrets(rendered: dict[str, Objects]) -> None:
    for objects in rendered.values():
        for config in of_kind(objects, "ConfigMap").values():
            assert not {"FERRY_DATABASE_URL", "FERRY_API_TOKEN"} & set(config.get("data", {}))
    registry = container(of_kind(rendered["secured-values"], "Deployment")[f"{FULLNAME}-registry"])
    [url] = [env for env in registry["env"] if env["name"] == "FERRY_DATABASE_URL"]
    assert url["valueFrom"]["secretKeyRef"] == {"name": "ferry-database", "key": "url"}
    settings = of_kind(rendered["secured-values"], "ConfigMap")[f"{FULLNAME}-settings"]["data"]
    assert settings["FERRY_KAFKA_PASSWORD_FILE"] == "/etc/ferry/kafka/password"


def test_the_monitoring_objects_are_the_rules_files(rendered: dict[str, Objects]) -> None:
    """PrometheusRule, dashboard and the monitor's rules equal what deploy/alerts/rules.yaml generates."""
    objects = rendered["minimal-values"]
    [rule] = of_kind(objects, "PrometheusRule").values()
    assert rule["spec"] == prometheus.alerting_rules(read_rules(RULES))
    maps = of_kind(objects, "ConfigMap")
    board = maps[f"{FULLNAME}-dashboard"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    expected = json.dumps(dashboard.dashboard()).replace('"ferry-prometheus"', '"prometheus"')
    assert json.loads(board["data"]["ferry.json"]) == json.loads(expected)
    assert maps[f"{FULLNAME}-rules"]["data"]["rules.yaml"] == RULES.read_text().rstrip("\n")
    monitors = of_kind(objects, "ServiceMonitor")
    assert {item["spec"]["jobLabel"] for item in monitors.values()} == {"app.kubernetes.io/component"}
    assert len(monitors) == len(SERVICES)
    labels = of_kind(rendered["secured-values"], "PrometheusRule")[FULLNAME]["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack"


def test_every_pinned_crd_is_known(validator: Validator) -> None:
    """The CRDs the chart's objects and the trainer's jobs need, from the pinned modules."""
    assert {
        ("keda.sh", "v1alpha1", "ScaledObject"),
        ("keda.sh", "v1alpha1", "TriggerAuthentication"),
        ("monitoring.coreos.com", "v1", "PrometheusRule"),
        ("monitoring.coreos.com", "v1", "ServiceMonitor"),
        ("kubeflow.org", "v1", "PyTorchJob"),
    } <= set(validator.crds.sources)


def test_pytorch_jobs_give_the_trainer_a_role_for_them_alone(rendered: dict[str, Objects]) -> None:
    """Off by default; on, the trainer's ServiceAccount may create, watch and delete pytorchjobs, nothing else."""
    for name in ("minimal-values", "secured-values"):
        assert of_kind(rendered[name], "Role") == {} and of_kind(rendered[name], "ServiceAccount") == {}
    objects = rendered["gpu-values"]
    [role] = of_kind(objects, "Role").values()
    verbs = ["create", "get", "list", "watch", "delete"]
    assert role["rules"] == [{"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"], "verbs": verbs}]
    [binding] = of_kind(objects, "RoleBinding").values()
    [account] = of_kind(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    deployments = of_kind(objects, "Deployment")
    assert deployments[f"{FULLNAME}-trainer"]["spec"]["template"]["spec"]["serviceAccountName"] == account
    others = [item for name, item in deployments.items() if name != f"{FULLNAME}-trainer"]
    assert all("serviceAccountName" not in item["spec"]["template"]["spec"] for item in others)


def test_the_trainers_settings_from_the_chart_make_a_valid_pytorch_job(
    rendered: dict[str, Objects], validator: Validator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job the trainer would create from the rendered settings validates against the PyTorchJob CRD."""
    from services.trainer.adapters.pytorchjob import manifest
    from services.trainer.bootstrap import cluster_training
    from shared.events import TrainingRequested

    maps = of_kind(rendered["gpu-values"], "ConfigMap")
    environment = maps[f"{FULLNAME}-settings"]["data"] | maps[f"{FULLNAME}-trainer-settings"]["data"]
    for key in [key for key in os.environ if key.startswith("FERRY_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    settings = TrainerSettings()
    assert settings.cluster == "in-cluster" and settings.job_namespace == NAMESPACE
    assert settings.job_config_maps == [f"{FULLNAME}-settings"] and settings.job_gpus == 1
    spec = cluster_training(settings, None, publish=None, store=None, completed=None).spec  # type: ignore[arg-type]
    assert (
        spec.image
        == of_kind(rendered["gpu-values"], "Deployment")[f"{FULLNAME}-trainer"]["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
    )
    job = manifest(TrainingRequested(model_name="digits", dataset="sklearn:digits", world_size=16), spec)
    assert validator.errors(job) == []


def test_the_chart_refuses_a_kubernetes_older_than_the_validated_ones() -> None:
    args = ("template", FULLNAME, CHART, "-f", CHART / "ci" / "minimal-values.yaml", "--kube-version")
    assert helm(*args, "1.35.0").returncode == 0
    refused = helm(*args, "1.34.0")
    assert refused.returncode != 0 and "kubeVersion" in refused.stderr
