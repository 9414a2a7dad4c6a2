"""The local broker secured: TLS, SASL/SCRAM with one user per service, and ACLs (StandardAuthorizer).

With ``FERRY_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` the stack generates, once, under ``<home>/secrets/kafka``
(folder 0700, files 0600, never committed):

- a CA and the broker's certificate (RSA 2048, for ``127.0.0.1`` and ``localhost``), with ``cryptography``;
- a random password per user: ``admin`` (the broker's own super user), each service, and ``operator``
  (a person at the CLI).

The broker's one client listener is SASL_SSL (SCRAM-SHA-512). Its controller listener, on loopback, takes
SASL PLAIN from the admin alone: SCRAM credentials live in the metadata log the controller serves, so they
cannot authenticate the controller itself. ``admin`` is written into the storage when it is formatted; the
other users and their ACLs (``shared/kafka_access.py``) are upserted at every start, so the password
files stay the truth. Anything not granted is refused (``allow.everyone.if.no.acl.found=false``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Any

from shared.kafka_access import ACCESS, ADMIN, Access
from shared.settings import FerrySettings

MECHANISM = "SCRAM-SHA-512"
USERS = (ADMIN, *ACCESS)


class KafkaSecrets:
    """The certificates and passwords of a secured local broker, made on first use."""

    def __init__(self, home: Path) -> None:
        self.folder = home.absolute() / "secrets" / "kafka"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def broker_key_file(self) -> Path:
        return self.folder / "broker-key.pem"

    @property
    def broker_chain_file(self) -> Path:
        return self.folder / "broker-chain.pem"

    def password_file(self, user: str) -> Path:
        return self.folder / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    def ensure(self) -> None:
        """Write what is missing: the CA and broker certificate, and a password per user."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        if not (self.ca_file.exists() and self.broker_key_file.exists() and self.broker_chain_file.exists()):
            self._write_certificates()
        for user in USERS:
            if not self.password_file(user).exists():
                _write_private(self.password_file(user), secrets.token_urlsafe(24) + "\n")

    def _write_certificates(self) -> None:
        from cryptography.hazmat.primitives import serialization

        ca_key, ca_cert = _certificate("Ferry local CA", None)
        broker_key, broker_cert = _certificate("127.0.0.1", (ca_key, ca_cert))
        pem = serialization.Encoding.PEM
        _write_private(
            self.broker_key_file,
            broker_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode(),
        )
        _write_private(self.broker_chain_file, (broker_cert.public_bytes(pem) + ca_cert.public_bytes(pem)).decode())
        _write_private(self.ca_file, ca_cert.public_bytes(pem).decode())


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


def _certificate(common_name: str, issuer: tuple[Any, Any] | None) -> tuple[Any, Any]:
    """A key and its certificate: a self-signed CA when ``issuer`` is None, else a server certificate it signs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[1].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(issuer[0] if issuer else key, hashes.SHA256())


def client_settings(settings: FerrySettings, user: str) -> FerrySettings:
    """``settings`` as ``user`` of the local secured broker."""
    found = KafkaSecrets(settings.home)
    return settings.model_copy(
        update={
            "kafka_username": user,
            "kafka_password_file": found.password_file(user),
            "kafka_ssl_cafile": found.ca_file,
        }
    )


def with_local_operator(settings: FerrySettings) -> FerrySettings:
    """A person at the CLI of a secured local broker is ``operator`` unless FERRY_KAFKA_USERNAME says otherwise."""
    if not settings.kafka_secured or settings.kafka_username:
        return settings
    if not KafkaSecrets(settings.home).password_file("operator").exists():
        return settings
    return client_settings(settings, "operator")


def client_environment(settings: FerrySettings, user: str) -> dict[str, str]:
    """The ``FERRY_KAFKA_*`` variables that make a process ``user`` of the local secured broker."""
    found = KafkaSecrets(settings.home)
    return {
        "FERRY_KAFKA_USERNAME": user,
        "FERRY_KAFKA_PASSWORD_FILE": str(found.password_file(user)),
        "FERRY_KAFKA_SSL_CAFILE": str(found.ca_file),
    }


def broker_properties(found: KafkaSecrets, port: int, controller: int) -> dict[str, str]:
    """server.properties entries of a secured single-node broker (they replace the PLAINTEXT ones)."""
    admin = found.password(ADMIN)
    scram = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{admin}";'
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{ADMIN}" password="{admin}" user_{ADMIN}="{admin}";'
    )
    return {
        "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": scram,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": _one_line(found.broker_chain_file),
        "ssl.keystore.key": _one_line(found.broker_key_file),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.certificates": _one_line(found.ca_file),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{ADMIN}",
        "allow.everyone.if.no.acl.found": "false",
    }


def _one_line(path: Path) -> str:
    """A PEM file as one properties value (newlines escaped as a properties file spells them)."""
    return path.read_text().strip().replace("\n", "\\n")


def format_arguments(found: KafkaSecrets) -> list[str]:
    """kafka-storage format's arguments that store the admin's SCRAM credential before the first start."""
    return ["--add-scram", f"{MECHANISM}=[name={ADMIN},password={found.password(ADMIN)}]"]


def provision(settings: FerrySettings) -> None:
    """Upsert every user's SCRAM credential and ACLs; ``settings`` is the admin's."""
    from kafka.admin import KafkaAdminClient, ScramMechanism, UserScramCredentialUpsertion

    found = KafkaSecrets(settings.home)
    admin = KafkaAdminClient(**settings.kafka_client_options(), client_id="ferry-admin")
    try:
        admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, ScramMechanism.SCRAM_SHA_512, found.password(user)) for user in ACCESS]
        )
        admin.create_acls([acl for user, access in ACCESS.items() for acl in acls_for(user, access, settings)])
    finally:
        admin.close()


def acls_for(user: str, access: Access, settings: FerrySettings) -> list[Any]:
    """The ALLOW ACLs of one user: READ its topics, WRITE its topics and dead letters, READ its groups."""
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    def allow(operation: Any, kind: Any, name: str, pattern: Any = ACLResourcePatternType.LITERAL) -> Any:
        return ACL(f"User:{user}", "*", operation, ACLPermissionType.ALLOW, ResourcePattern(kind, name, pattern))

    prefix, prefixed = settings.topic_prefix, ACLResourcePatternType.PREFIXED
    acls = [allow(ACLOperation.READ, ResourceType.TOPIC, name) for name in access.read_topics(prefix)]
    acls += [allow(ACLOperation.WRITE, ResourceType.TOPIC, name) for name in access.write_topics(prefix)]
    acls += [allow(ACLOperation.READ, ResourceType.GROUP, group, prefixed) for group in access.group_prefixes]
    if access.every_topic:
        acls += [
            allow(operation, ResourceType.TOPIC, prefix, prefixed)
            for operation in (ACLOperation.READ, ACLOperation.WRITE)
        ]
    return acls
