"""PyTorchJobs through the official ``kubernetes`` client: create, get, delete, list and watch in one namespace.

The only module that imports the client; ``JobApi`` is what the trainer's cluster path needs of it, and the
tests' fake implements the same calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from services.trainer.adapters.pytorchjob import GROUP, PLURAL, VERSION
from shared.errors import TransientError

_REQUEST_TIMEOUT_S = 30  # a call that hangs (a half-open connection) fails as unreachable instead


class JobConflict(Exception):
    """A job of that name exists already."""


class JobGone(Exception):
    """No job of that name (any more)."""


class ClusterUnavailable(TransientError):
    """The API server did not answer, or answered 429 or 5xx: worth retrying."""


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again, then watch from there."""


@dataclass(frozen=True)
class JobEvent:
    """One watch event: ADDED, MODIFIED or DELETED, and the job object as it was then."""

    type: str
    job: dict[str, Any]


class JobApi(Protocol):
    """What the trainer does with PyTorchJobs in its namespace."""

    def create(self, job: dict[str, Any]) -> dict[str, Any]: ...

    def get(self, name: str) -> dict[str, Any]: ...

    def delete(self, name: str) -> None: ...

    def list(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        """The jobs matching the label selector, and the list's resourceVersion to watch from."""
        ...

    def watch(self, selector: str, resource_version: str, timeout_s: int) -> Iterator[JobEvent]:
        """Events after ``resource_version`` for up to ``timeout_s``; WatchExpired when it is too old."""
        ...


class KubeJobs:
    """``JobApi`` over the API server, through ``CustomObjectsApi``."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client  # here: only a trainer with a cluster needs the client loaded

        self._api = client.CustomObjectsApi(api_client)
        self._namespace = namespace

    @classmethod
    def connect(cls, cluster: str, namespace: str) -> KubeJobs:
        """``cluster`` is ``in-cluster`` (the pod's ServiceAccount) or the path of a kubeconfig file."""
        from kubernetes import client, config

        configuration = client.Configuration()
        if cluster == "in-cluster":
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=cluster, client_configuration=configuration)
        _send_the_token(configuration)
        return cls(client.ApiClient(configuration), namespace)

    def _where(self) -> tuple[str, str, str, str]:
        return GROUP, VERSION, self._namespace, PLURAL

    def create(self, job: dict[str, Any]) -> dict[str, Any]:
        with _translated():
            return dict(
                self._api.create_namespaced_custom_object(*self._where(), job, _request_timeout=_REQUEST_TIMEOUT_S)
            )

    def get(self, name: str) -> dict[str, Any]:
        with _translated():
            return dict(
                self._api.get_namespaced_custom_object(*self._where(), name, _request_timeout=_REQUEST_TIMEOUT_S)
            )

    def delete(self, name: str) -> None:
        with _translated():
            self._api.delete_namespaced_custom_object(
                *self._where(), name, propagation_policy="Background", _request_timeout=_REQUEST_TIMEOUT_S
            )

    def list(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        with _translated():
            listed = self._api.list_namespaced_custom_object(
                *self._where(), label_selector=selector, _request_timeout=_REQUEST_TIMEOUT_S
            )
        return list(listed.get("items") or []), str(listed["metadata"].get("resourceVersion", ""))

    def watch(self, selector: str, resource_version: str, timeout_s: int) -> Iterator[JobEvent]:
        from kubernetes import watch

        stream = watch.Watch().stream(
            self._api.list_namespaced_custom_object,
            *self._where(),
            label_selector=selector,
            resource_version=resource_version,
            timeout_seconds=timeout_s,
            _request_timeout=timeout_s + _REQUEST_TIMEOUT_S,
        )
        with _translated():
            for event in stream:
                if event["type"] == "ERROR":
                    # The server ends a watch whose version it no longer keeps with an ERROR event (410).
                    raise WatchExpired(str(event["raw_object"].get("message", "watch expired")))
                yield JobEvent(type=str(event["type"]), job=dict(event["raw_object"]))


def _send_the_token(configuration: Any) -> None:
    """Make the loaded token reach the server with kubernetes 36.0.0 too.

    Its loaders write the token to ``api_key["authorization"]`` while its requests read ``api_key["BearerToken"]``,
    so every call went out anonymous (kubernetes-client/python#2582, #2584); a real API server refused them. The
    copy is made before each request, through the refresh hook, so a rotated ServiceAccount token is followed.
    """
    loaded_hook = configuration.refresh_api_key_hook

    def refresh(current: Any) -> None:
        if loaded_hook is not None:
            loaded_hook(current)
        if "authorization" in current.api_key:
            current.api_key["BearerToken"] = current.api_key["authorization"]

    configuration.refresh_api_key_hook = refresh
    refresh(configuration)


@contextmanager
def _translated() -> Iterator[None]:
    """Turns the client's errors into the trainer's own: 409, 404, 410, and unreachable or overloaded servers."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except HTTPError as error:
        raise ClusterUnavailable(f"the Kubernetes API server is unreachable: {error}") from error
    except ApiException as error:
        status = error.status or 0
        if status in (0, 429) or status >= 500:
            raise ClusterUnavailable(f"the Kubernetes API server answered {status}: {error.reason}") from error
        if status == 409:
            raise JobConflict(str(error.reason)) from error
        if status == 404:
            raise JobGone(str(error.reason)) from error
        if status == 410:
            raise WatchExpired(str(error.reason)) from error
        raise
