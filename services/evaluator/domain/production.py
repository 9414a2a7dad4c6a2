"""The judgement of a version retrained on a production window: one verdict on the original held-out split, one
on the window's held-out part, and a policy that says which must hold (``FERRY_EVALUATOR_PRODUCTION_SPLIT_POLICY``).

- ``both``: the candidate is promoted only when both verdicts promote it (the stricter of the two stands);
- ``original``: the original split decides, the window's verdict is reported;
- ``production``: the window decides, the original's verdict is reported.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from services.evaluator.domain.policy import Verdict

ProductionPolicy = Literal["both", "original", "production"]


def combined_verdict(original: Verdict, production: Verdict, policy: ProductionPolicy, cause: str) -> Verdict:
    """The verdict ``policy`` draws from the two; its reason names ``cause`` (the alert and window) and both."""
    if policy == "original":
        chosen = original
    elif policy == "production":
        chosen = production
    else:
        chosen = original if original.decision == "reject" or production.decision != "reject" else production
    words = (
        f"{cause}; policy {policy}: on the original held-out split {original.decision} ({original.reason}); "
        f"on the production window's held-out part {production.decision} ({production.reason})"
    )
    return replace(
        chosen, reason=words, checks=(*original.checks, *production.checks) if policy == "both" else chosen.checks
    )
