"""The registry's settings: environment prefix ``FERRY_REGISTRY_``, plus the shared ``FERRY_`` ones."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.settings import FerrySettings

MIN_TOKEN_LENGTH = 16
# Tokens made of nothing but these words (and digits or separators) are placeholders, whatever their length.
PLACEHOLDER_WORDS = (
    "changeme",
    "change",
    "secret",
    "token",
    "password",
    "passwd",
    "ferry",
    "demo",
    "test",
    "admin",
    "default",
    "example",
    "placeholder",
    "registry",
    "dummy",
    "sample",
    "insecure",
    "letmein",
    "api",
    "key",
    "dev",
    "me",
)
USER_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,100}$")
ENV_TOKEN_USER = "admin"


class InvalidApiTokens(ValueError):
    """The configured API tokens cannot be used; the message says why and never quotes a token."""


def token_weakness(token: str) -> str | None:
    """Why ``token`` is no real secret (empty, short, a placeholder), or None when it will do."""
    if not token:
        return "is empty"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is shorter than {MIN_TOKEN_LENGTH} characters"
    rest = token.lower()
    for word in sorted(PLACEHOLDER_WORDS, key=len, reverse=True):
        rest = rest.replace(word, "")
    if not any(character.isalpha() for character in rest):
        return "is a well-known placeholder (made only of words like changeme, secret, demo, token)"
    if len(set(token)) < 6:
        return "has fewer than 6 distinct characters"
    return None


def parse_tokens_file(path: Path) -> dict[str, str]:
    """``<user> <token>`` per line (``#`` starts a comment line) → {token: user}; InvalidApiTokens when unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidApiTokens(f"FERRY_REGISTRY_TOKENS_FILE {path} cannot be read: {type(error).__name__}") from error
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) != 2:
            raise InvalidApiTokens(f"{path}:{number}: expected '<user> <token>' ({len(parts)} fields found)")
        user, token = parts
        if not USER_PATTERN.match(user):
            raise InvalidApiTokens(f"{path}:{number}: a user name is 1-100 of A-Z a-z 0-9 _ . @ -")
        weakness = token_weakness(token)
        if weakness:
            raise InvalidApiTokens(f"{path}:{number}: the token of user {user!r} {weakness}")
        if token in tokens:
            raise InvalidApiTokens(f"{path}:{number}: user {user!r} has the same token as user {tokens[token]!r}")
        tokens[token] = user
    if not tokens:
        raise InvalidApiTokens(f"FERRY_REGISTRY_TOKENS_FILE {path} names no token")
    return tokens


class RegistrySettings(BaseSettings):
    """What the registry process needs; the stack's own settings are nested under ``ferry``."""

    model_config = SettingsConfigDict(env_prefix="FERRY_REGISTRY_", extra="ignore", frozen=True, populate_by_name=True)

    ferry: FerrySettings = Field(default_factory=FerrySettings, description="The shared FERRY_ settings")
    host: str = Field(default="127.0.0.1", description="Interface the HTTP API listens on")
    port: int = Field(default=8081, ge=1, le=65535, description="Port of the HTTP API")
    api_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("FERRY_API_TOKEN", "FERRY_REGISTRY_API_TOKEN", "api_token"),
        description="A single bearer token for writes, credited to user 'admin' (unless the tokens file names it)",
    )
    tokens_file: Path | None = Field(
        default=None, description="File of '<user> <token>' lines: each token's user is the actor of its writes"
    )
    consumer_group: str = Field(default="registry", min_length=1)
    consumer_session_timeout_ms: int = Field(
        default=10_000, ge=6_000, le=300_000, description="How soon a dead registry's partitions move to another"
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=20, ge=0, le=200)
    migrate_on_start: bool = Field(default=True, description="Run `alembic upgrade head` at start-up")
    default_canary_weight: float = Field(default=0.1, ge=0, le=1, description="Canary weight when none is given")
    relay_batch_size: int = Field(default=200, ge=1, le=10_000)
    relay_idle_s: float = Field(default=0.2, gt=0, le=60, description="Outbox poll interval when idle")
    outbox_retention_hours: float = Field(default=24.0, gt=0, description="How long sent outbox rows are kept")
    shutdown_timeout_s: float = Field(default=15.0, gt=0)

    def api_tokens(self) -> dict[str, str]:
        """Every accepted bearer token → its user; empty when writes are disabled (neither setting given).

        Raises InvalidApiTokens for an empty, short or placeholder token, or an unusable tokens file: the
        registry refuses to start rather than guard its writes with a guessable secret.
        """
        tokens = parse_tokens_file(self.tokens_file) if self.tokens_file is not None else {}
        if self.api_token is not None:
            token = self.api_token.get_secret_value()
            weakness = token_weakness(token)
            if weakness:
                raise InvalidApiTokens(f"FERRY_API_TOKEN {weakness}")
            tokens.setdefault(token, ENV_TOKEN_USER)  # a token the file names keeps the file's user
        return tokens
