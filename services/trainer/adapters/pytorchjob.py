"""The shape of a Kubeflow PyTorchJob (training.kubeflow.org/v1) as the trainer writes and reads it.

Pure data: the manifest of one training request, and what a job object says about its run. The request
travels inside the job as the event's own JSON (an annotation for the trainer that watches, an environment
variable for the pods); the pods run a fixed Ferry entrypoint under torchrun, never a path or code from it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from shared.events import TrainingRequested

GROUP = "kubeflow.org"
VERSION = "v1"
PLURAL = "pytorchjobs"
KIND = "PyTorchJob"
MANAGED_BY = "ferry-trainer"
MANAGED_LABEL = "app.kubernetes.io/managed-by"
SELECTOR = f"{MANAGED_LABEL}={MANAGED_BY}"
"""The label selector of every job a trainer started: a restarted trainer lists them by it."""
REQUEST_ANNOTATION = "ferry.dev/training-request"
REQUEST_ENV = "FERRY_TRAINER_JOB_REQUEST"
ENTRYPOINT = "services.trainer.entrypoints.job"
PORT = 23456  # the operator's default rendezvous port, named as it expects
JOB_EXIT_FAILED = 1
"""The pods' exit code for a request that cannot succeed: under restartPolicy ExitCode, 1-127 is permanent
(the job fails at once), while a pod killed by a signal (128+, an eviction) is restarted."""

Phase = Literal["pending", "running", "succeeded", "failed"]


@dataclass(frozen=True)
class JobSpec:
    """What a PyTorchJob's pods get besides the request: the trainer's job settings."""

    image: str
    namespace: str
    service_account: str = ""
    config_maps: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = 0
    backoff_limit: int = 3
    budget_s: float = 1800.0


@dataclass(frozen=True)
class JobState:
    """What one job object says: its request, its phase, and why it failed."""

    name: str
    request: TrainingRequested
    phase: Phase
    reason: str = ""
    deleting: bool = False


def job_name(request_id: str) -> str:
    """One name per request (a DNS label): a redelivered request finds its job instead of making another."""
    return f"ferry-train-{hashlib.sha256(request_id.encode()).hexdigest()[:24]}"


def manifest(request: TrainingRequested, spec: JobSpec) -> dict[str, Any]:
    """The PyTorchJob of one request: a Master and ``world_size - 1`` Workers, one torchrun process each."""
    request_json = request.model_dump_json()
    replicas = {"Master": 1} | ({"Worker": request.world_size - 1} if request.world_size > 1 else {})
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": job_name(request.request_id),
            "namespace": spec.namespace,
            "labels": {MANAGED_LABEL: MANAGED_BY, "app.kubernetes.io/component": "training-job"},
            "annotations": {REQUEST_ANNOTATION: request_json},
        },
        "spec": {
            "nprocPerNode": "1",
            "runPolicy": {
                "backoffLimit": spec.backoff_limit,
                "cleanPodPolicy": "Running",
                # A job that outlives its budget (and time to start) ends Failed: the trainer says so.
                "activeDeadlineSeconds": int(spec.budget_s) + 600,
            },
            "pytorchReplicaSpecs": {
                kind: {"replicas": count, "restartPolicy": "ExitCode", "template": _pod(request_json, spec)}
                for kind, count in replicas.items()
            },
        },
    }


def _pod(request_json: str, spec: JobSpec) -> dict[str, Any]:
    resources = {"cpu": spec.cpu, "memory": spec.memory} | ({"nvidia.com/gpu": spec.gpus} if spec.gpus else {})
    env_from = [{"configMapRef": {"name": name}} for name in spec.config_maps]
    env_from += [{"secretRef": {"name": name}} for name in spec.secrets]
    pod: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "pytorch",  # the operator finds its container by this name
                "image": spec.image,
                "command": ["torchrun"],
                # $(VAR) is expanded by the kubelet from what the operator sets on each pod.
                "args": [
                    "--nnodes=$(WORLD_SIZE)",
                    "--nproc-per-node=1",
                    "--node-rank=$(RANK)",
                    "--master-addr=$(MASTER_ADDR)",
                    "--master-port=$(MASTER_PORT)",
                    "-m",
                    ENTRYPOINT,
                ],
                "env": [
                    {"name": REQUEST_ENV, "value": request_json},
                    {"name": "FERRY_TRAINER_BUDGET_S", "value": str(spec.budget_s)},
                    {"name": "HOME", "value": "/var/lib/ferry"},
                ],
                "envFrom": env_from,
                "ports": [{"name": "pytorchjob-port", "containerPort": PORT, "protocol": "TCP"}],
                "resources": {"requests": resources, "limits": resources},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "home", "mountPath": "/var/lib/ferry"},
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "shm", "mountPath": "/dev/shm"},
                ],
            }
        ],
        "volumes": [
            {"name": "home", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
        ],
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    return {"metadata": {"labels": {MANAGED_LABEL: MANAGED_BY}}, "spec": pod}


def read_job(job: dict[str, Any]) -> JobState:
    """The state of a job object; ValueError when it carries no valid request (not one of ours)."""
    metadata = job.get("metadata") or {}
    annotation = (metadata.get("annotations") or {}).get(REQUEST_ANNOTATION)
    if not annotation:
        raise ValueError(f"job {metadata.get('name')!r} carries no training request")
    request = TrainingRequested.model_validate_json(annotation)
    phase, reason = _phase(job)
    return JobState(
        name=str(metadata.get("name")),
        request=request,
        phase=phase,
        reason=reason,
        deleting=bool(metadata.get("deletionTimestamp")),
    )


def _phase(job: dict[str, Any]) -> tuple[Phase, str]:
    """The job's phase from its true conditions: Failed or Succeeded end it, Running or Restarting run it."""
    conditions = (job.get("status") or {}).get("conditions") or []
    true = {str(condition.get("type")): condition for condition in conditions if condition.get("status") == "True"}
    if "Failed" in true:
        condition = true["Failed"]
        return "failed", str(condition.get("message") or condition.get("reason") or "the PyTorchJob failed")
    if "Succeeded" in true:
        return "succeeded", ""
    if "Running" in true or "Restarting" in true:
        return "running", ""
    return "pending", ""
