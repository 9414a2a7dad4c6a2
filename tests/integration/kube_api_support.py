"""A real Kubernetes API server for tests: etcd and kube-apiserver as tools/kube-apiserver.sh builds them from
their Go modules, with RBAC on, an admin token, and ServiceAccount tokens (TokenRequest) for the objects a
test creates. No kubelet, no controllers: nothing runs a pod; a test plays the operator by writing status."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client

from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "ferry-test-admin-token"


def binaries() -> Path | None:
    """The folder tools/kube-apiserver.sh builds into, when both binaries are there."""
    script = (ROOT / "tools" / "kube-apiserver.sh").read_text()
    version = script.split('KUBERNETES_VERSION="', 1)[1].split('"', 1)[0]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "ferry" / "tools" / f"kube-apiserver-{version}"
    return folder if (folder / "kube-apiserver").exists() and (folder / "etcd").exists() else None


class KubeApi:
    """A running API server: its URL, an admin ApiClient, and kubeconfig files for other identities."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url, self.folder = url, folder
        self.admin = self.api_client(ADMIN_TOKEN)

    def api_client(self, token: str) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = self.url
        configuration.verify_ssl = False  # the server's own self-signed certificate
        configuration.api_key = {"BearerToken": f"Bearer {token}"}
        return client.ApiClient(configuration)

    def kubeconfig(self, token: str, name: str) -> Path:
        """A kubeconfig file for ``token``, as a trainer outside the cluster is given one."""
        path = self.folder / f"{name}.kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "test", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
                    "users": [{"name": name, "user": {"token": token}}],
                    "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
                    "current-context": name,
                }
            )
        )
        return path

    def install_crd(self, path: Path) -> None:
        """Create the CRDs of a file and wait until the server serves them."""
        extensions = client.ApiextensionsV1Api(self.admin)
        for crd in yaml.safe_load_all(path.read_text()):
            if crd and crd.get("kind") == "CustomResourceDefinition":
                extensions.create_custom_resource_definition(crd)
                name = crd["metadata"]["name"]
                wait_for(lambda name=name: _established(extensions, name), what=f"CRD {name}")

    def token_for(self, namespace: str, account: str) -> str:
        """A token of a ServiceAccount (TokenRequest), as its pods would mount."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        }
        answer = client.CoreV1Api(self.admin).create_namespaced_service_account_token(account, namespace, request)
        return str(answer.status.token)


def _established(extensions: client.ApiextensionsV1Api, name: str) -> bool:
    conditions = extensions.read_custom_resource_definition(name).status.conditions or []
    return any(condition.type == "Established" and condition.status == "True" for condition in conditions)


@contextmanager
def running_api_server(folder: Path) -> Iterator[KubeApi]:
    """etcd and kube-apiserver on free loopback ports, stopped after; fails when they are not built (``make
    test`` builds them, as it builds helm)."""
    tools = binaries()
    if tools is None:
        pytest.fail("kube-apiserver and etcd are not built: run `bash tools/kube-apiserver.sh` (tens of minutes, once)")
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    key = folder / "service-accounts.key"
    key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    (folder / "tokens.csv").write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')
    etcd = [
        str(tools / "etcd"),
        f"--data-dir={folder / 'etcd'}",
        f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
        f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
        f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
        f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
    ]
    apiserver = [
        str(tools / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        f"--secure-port={api_port}",
        f"--cert-dir={folder / 'certs'}",
        f"--token-auth-file={folder / 'tokens.csv'}",
        "--authorization-mode=RBAC",
        f"--service-account-key-file={key}",
        f"--service-account-signing-key-file={key}",
        "--service-account-issuer=https://kubernetes.default.svc",
        "--service-cluster-ip-range=10.96.0.0/16",
    ]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in (("etcd", etcd), ("kube-apiserver", apiserver)):
            with (folder / f"{name}.log").open("ab") as log:
                processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        api = KubeApi(f"https://127.0.0.1:{api_port}", folder)
        wait_for(lambda: _ready(api, processes, folder), what="kube-apiserver /readyz", timeout_s=180)
        yield api
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _ready(api: KubeApi, processes: list[subprocess.Popen[bytes]], folder: Path) -> bool:
    for process in processes:
        if process.poll() is not None:
            logs = "".join(path.read_text(errors="replace")[-2000:] for path in folder.glob("*.log"))
            pytest.fail(f"{process.args[0]} exited {process.returncode}:\n{logs}")
    try:
        answer = httpx.get(f"{api.url}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, verify=False)
    except httpx.HTTPError:
        return False  # not listening yet
    return answer.status_code == 200
