"""Bearer tokens and basic-auth passwords: files of ``<user> <token>`` lines, their validation (no empty,
short or placeholder secret), and the constant-time check of what a request offers.

The registry's writes and the monitor's incoming webhooks both read their tokens this way.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from pathlib import Path

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


class InvalidTokens(ValueError):
    """The configured tokens cannot be used; the message says why and never quotes a token."""


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


def parse_tokens_file(path: Path, *, setting: str) -> dict[str, str]:
    """``<user> <token>`` per line (``#`` starts a comment line) → {token: user}; InvalidTokens when unusable.

    ``setting`` names the variable that gave the path, for the error messages.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidTokens(f"{setting} {path} cannot be read: {type(error).__name__}") from error
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) != 2:
            raise InvalidTokens(f"{path}:{number}: expected '<user> <token>' ({len(parts)} fields found)")
        user, token = parts
        if not USER_PATTERN.match(user):
            raise InvalidTokens(f"{path}:{number}: a user name is 1-100 of A-Z a-z 0-9 _ . @ -")
        weakness = token_weakness(token)
        if weakness:
            raise InvalidTokens(f"{path}:{number}: the token of user {user!r} {weakness}")
        if token in tokens:
            raise InvalidTokens(f"{path}:{number}: user {user!r} has the same token as user {tokens[token]!r}")
        tokens[token] = user
    if not tokens:
        raise InvalidTokens(f"{setting} {path} names no token")
    return tokens


class TokenCheck:
    """Which user a bearer token or a basic-auth (user, password) belongs to, in constant time.

    Every known token is compared, whichever matches: the time taken says nothing about which one did,
    nor how much of a wrong one was right.
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        """``tokens``: token → user, as ``parse_tokens_file`` gives them."""
        self._known = [(token.encode(), user.encode(), user) for token, user in tokens.items()]

    def __bool__(self) -> bool:
        return bool(self._known)

    def bearer(self, offered: str) -> str | None:
        """The user of the token offered, or None."""
        offered_bytes = offered.encode("utf-8", "surrogateescape")
        found = None
        for token, _, user in self._known:
            if hmac.compare_digest(offered_bytes, token):
                found = user
        return found

    def basic(self, username: str, password: str) -> str | None:
        """The user when the password is that user's token, or None."""
        offered_user = username.encode("utf-8", "surrogateescape")
        offered_password = password.encode("utf-8", "surrogateescape")
        found = None
        for token, user_bytes, user in self._known:
            password_ok = hmac.compare_digest(offered_password, token)
            user_ok = hmac.compare_digest(offered_user, user_bytes)
            if password_ok and user_ok:
                found = user
        return found
