"""A service's command line: ``python -m services.<name> --help`` says what the process is and which
environment variables configure it, and exits; any other argument is refused with status 2.

A service takes no arguments: it is configured by its environment (its own prefix, ``FERRY_GATEWAY_``
say, and the shared ``FERRY_`` settings). Without this, ``--help`` would have started the service.
``tools/docgen.py`` names the variables the same way for the documentation's tables.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings


def env_names(prefix: str, name: str, field: FieldInfo) -> list[str]:
    """The variables a settings field reads, the first being the one to use."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str) and choice.startswith("FERRY_")]
    if isinstance(alias, str):
        return [alias.upper()]
    return [f"{prefix}{name}".upper()]


def variables_text(settings: type[BaseSettings]) -> str:
    """Every variable of a settings class and of the settings classes nested in it, one line each."""
    prefix = settings.model_config.get("env_prefix", "")
    own, nested = [], []
    for name, field in settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseSettings):
            nested.append(f"\nshared settings ({annotation.model_config.get('env_prefix', '')}):\n")
            nested.append(variables_text(annotation))
            continue
        default = field.get_default(call_default_factory=True)
        shown = "" if default in (None, "", [], {}) else f" (default {default})"
        own.append(f"  {env_names(prefix, name, field)[0]}{shown}\n      {field.description or ''}".rstrip())
    return "\n".join(own) + "".join(nested)


def parse_service_args(service: str, doc: str | None, settings: type[BaseSettings], argv: Sequence[str] | None) -> None:
    """Handle ``--help`` (print, exit 0) and refuse any other argument (exit 2) before the service starts."""
    parser = argparse.ArgumentParser(
        prog=f"python -m services.{service}",
        description=(doc or "").strip(),
        epilog=f"environment variables:\n{variables_text(settings)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
