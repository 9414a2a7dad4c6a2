"""Versions get a description; edits and archives of models and versions are audited.

- ``model_versions.description``: free text, edited over HTTP like the model's (which 0001 already has).
- ``model_audit``: one append-only row per edit or archive (who, what changed from what to what, when).
  Not ``deployment_history``: that table is keyed by the deployment's revision, which an edit does not
  move, and rollback reads it to find former champions; an edit there would be a revision that routes
  nothing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT_ACTIONS = ("edit", "archive")


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("description", sa.Text(), nullable=False, server_default=""))
    actions = ", ".join(f"'{action}'" for action in AUDIT_ACTIONS)
    op.create_table(
        "model_audit",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("model_id", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("changes", JSONB(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.ForeignKeyConstraint(
            ["model_id"], ["registered_models.id"], name="fk_model_audit_model_id_registered_models", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_model_audit"),
        sa.CheckConstraint(f"action IN ({actions})", name="ck_model_audit_action_known"),
    )
    op.create_index("ix_model_audit_model_id_id", "model_audit", ["model_id", "id"])
    # Like the deployment history, the audit is append-only: the database refuses to change or delete a row.
    op.execute(
        "CREATE FUNCTION model_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'model_audit is append-only'; END $$"
    )
    op.execute(
        "CREATE TRIGGER model_audit_append_only BEFORE UPDATE OR DELETE ON model_audit "
        "FOR EACH ROW EXECUTE FUNCTION model_audit_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER model_audit_append_only ON model_audit")
    op.execute("DROP FUNCTION model_audit_append_only()")
    op.drop_index("ix_model_audit_model_id_id", table_name="model_audit")
    op.drop_table("model_audit")
    op.drop_column("model_versions", "description")
