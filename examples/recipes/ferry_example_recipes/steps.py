"""How the examples read a row as a sequence: equal steps of consecutive features."""

from __future__ import annotations

from services.trainer.recipe import DatasetSpec


def step_count(spec: DatasetSpec, requested: int) -> int:
    """``requested`` steps, or by default one per image row (digits: 8), else one per feature."""
    if requested < 0:
        raise ValueError(f"steps must be 0 (automatic) or positive, got {requested}")
    steps = requested or (spec.image_shape[0] if spec.image_shape else spec.num_features)
    if spec.num_features % steps:
        raise ValueError(f"{spec.num_features} features cannot be cut into {steps} equal steps")
    return steps


def at_least_one(**values: int) -> None:
    """Raise ValueError naming the first option below 1."""
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
