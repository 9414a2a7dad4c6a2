"""The secrets of a local Ferry: generated once into the state folder, never well known.

``make up`` and ``make demo`` call :func:`ensure_tokens_file`: unless ``FERRY_REGISTRY_TOKENS_FILE``
names a file of the user's own, a random token is written once to ``<home>/secrets/api-tokens`` as
the line ``operator <token>`` (folder 0700, file 0600). The registry reads that file (lines
``<user> <token>``); the demo and a person at a shell read the operator's token from it.

They call :func:`ensure_webhook_tokens_file` too: unless ``FERRY_MONITOR_WEBHOOK_TOKENS_FILE`` names a
file of the user's own, ``<home>/secrets/webhook-tokens`` gets a random token for each sender of alerts
(``alertmanager <token>``, ``grafana <token>``), and ``<home>/secrets/alertmanager-webhook-token`` the
alertmanager's alone: the ``credentials_file`` of the generated ``deploy/prometheus/alertmanager.yml``.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from shared.settings import FerrySettings

log = logging.getLogger(__name__)

TOKENS_FILE_ENV = "FERRY_REGISTRY_TOKENS_FILE"
OPERATOR = "operator"
WEBHOOK_TOKENS_FILE_ENV = "FERRY_MONITOR_WEBHOOK_TOKENS_FILE"
WEBHOOK_SENDERS = ("alertmanager", "grafana")


class TokenError(RuntimeError):
    """The tokens file is missing, unreadable or holds no usable token; the message says which."""


@dataclass(frozen=True)
class TokensFile:
    path: Path
    created: bool


def default_tokens_file(settings: FerrySettings) -> Path:
    return settings.home.absolute() / "secrets" / "api-tokens"


def default_webhook_tokens_file(settings: FerrySettings) -> Path:
    return settings.home.absolute() / "secrets" / "webhook-tokens"


def alertmanager_credentials_file(settings: FerrySettings) -> Path:
    """The file of Alertmanager's token alone, as its ``http_config.authorization.credentials_file`` reads it."""
    return settings.home.absolute() / "secrets" / "alertmanager-webhook-token"


def ensure_tokens_file(settings: FerrySettings) -> TokensFile:
    """The tokens file to give the registry: the user's (``FERRY_REGISTRY_TOKENS_FILE``) or a generated one."""
    return _ensure(TOKENS_FILE_ENV, default_tokens_file(settings), f"{OPERATOR} {_new_token()}\n")


def ensure_webhook_tokens_file(settings: FerrySettings) -> TokensFile:
    """The webhook tokens file to give the monitor: the user's (``FERRY_MONITOR_WEBHOOK_TOKENS_FILE``) or a
    generated one, a token per sender; a generated one's alertmanager token is also written alone for
    Alertmanager's ``credentials_file``."""
    tokens = _ensure(
        WEBHOOK_TOKENS_FILE_ENV,
        default_webhook_tokens_file(settings),
        "".join(f"{sender} {_new_token()}\n" for sender in WEBHOOK_SENDERS),
    )
    if tokens.path == default_webhook_tokens_file(settings):
        alertmanager = read_tokens(tokens.path).get("alertmanager")
        credentials = alertmanager_credentials_file(settings)
        if alertmanager and not (credentials.is_file() and credentials.read_text().strip() == alertmanager):
            # Replaced whole (never half-written), so it follows a tokens file made anew.
            partial = credentials.with_name(f".{credentials.name}.{os.getpid()}")
            partial.unlink(missing_ok=True)
            _write_once(partial, f"{alertmanager}\n")
            partial.replace(credentials)
    return tokens


def _new_token() -> str:
    return secrets.token_urlsafe(32)


def _ensure(variable: str, default: Path, content: str) -> TokensFile:
    """The file ``variable`` names (it must exist), else ``default``, written once with ``content``."""
    configured = os.environ.get(variable)
    if configured:
        path = Path(configured).absolute()
        if not path.is_file():
            raise TokenError(f"{variable}={configured} names no file; create it (lines '<user> <token>')")
        _warn_if_readable_by_others(path)
        return TokensFile(path, created=False)
    return TokensFile(default, created=_write_once(default, content))


def _write_once(path: Path, text: str) -> bool:
    """Write ``text`` to a new file of mode 0600 in a folder of mode 0700; False when the file existed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made by an earlier `make up` (or a concurrent one): keep it
        _warn_if_readable_by_others(path)
        return False
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    return True


def read_tokens(path: Path) -> dict[str, str]:
    """``{user: token}`` from lines ``<user> <token>`` (blank lines and ``#`` comments are skipped)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise TokenError(f"cannot read the tokens file {path}: {error.strerror}") from None
    tokens: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenError(f"{path} line {number}: expected '<user> <token>'")
        tokens[parts[0]] = parts[1]
    if not tokens:
        raise TokenError(f"{path} holds no token")
    return tokens


def operator_token(path: Path) -> str:
    """The token the demo and the operator use: the ``operator`` line's, else the first line's."""
    tokens = read_tokens(path)
    return tokens.get(OPERATOR) or next(iter(tokens.values()))


def _warn_if_readable_by_others(path: Path) -> None:
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by other users; chmod 600 it", path)
