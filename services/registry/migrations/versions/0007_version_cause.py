"""Versions keep their cause: the alert that asked for their training and the production window it added.

Nullable: a version a person or a program asked for has none, and versions registered before this revision have
none either.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("cause", JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("model_versions", "cause")
