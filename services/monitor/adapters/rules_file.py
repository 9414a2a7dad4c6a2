"""Reads the rules file (YAML) into a validated :class:`RuleSet`."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from services.monitor.domain.rules import RuleSet, load_rules


class RulesFileError(ValueError):
    """The rules file is missing, not YAML, or not valid rules; the message says where."""


def read_rules(path: Path) -> RuleSet:
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as error:
        raise RulesFileError(f"cannot read rules file {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        raise RulesFileError(f"rules file {path} is not valid YAML (near {where})") from None
    try:
        return load_rules(document)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
        raise RulesFileError(f"rules file {path} is invalid: {problems}") from None
