"""Versions keep their input reference: the training split's per-feature bins that input drift is measured on.

Nullable: a text model has none, and versions registered before this revision have none either.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("input_reference", JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("model_versions", "input_reference")
