"""The registry's first schema: models, versions, evaluations, deployments, history, outbox, applied events.

Revision ID: 0001
Revises:
Create Date: 2025-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("registered", "evaluating", "challenger", "champion", "rejected", "archived", "rolled_back")
NOW = sa.text("now()")


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    default = None if nullable else NOW
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def _json(name: str) -> sa.Column:
    return sa.Column(name, JSONB(), nullable=False, server_default=sa.text("'{}'::jsonb"))


def _id() -> sa.Column:
    return sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True)


def _model_id() -> sa.Column:
    return sa.Column(
        "model_id", sa.BigInteger(), sa.ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "registered_models",
        _id(),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        _json("tags"),
        sa.Column("latest_version", sa.Integer(), nullable=False, server_default="0"),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.UniqueConstraint("name", name="uq_registered_models_name"),
    )
    _create_versions()
    _create_evaluations()
    _create_deployments()
    _create_history()
    _create_outbox()
    op.create_table(
        "applied_events",
        sa.Column("event_id", sa.Text(), primary_key=True),
        sa.Column("type_name", sa.Text(), nullable=False),
        _timestamp("applied_at"),
    )


def _create_versions() -> None:
    status_list = ", ".join(f"'{status}'" for status in STATUSES)
    op.create_table(
        "model_versions",
        _id(),
        _model_id(),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="registered"),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("artifact_sha256", sa.Text(), nullable=False),
        sa.Column("artifact_size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("artifact_format", sa.Text(), nullable=False),
        _json("signature"),
        _json("metrics"),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("split_id", sa.Text(), nullable=False),
        sa.Column("arch", sa.Text(), nullable=False),
        _json("hyperparameters"),
        _json("compression"),
        _json("timings"),
        sa.Column("training_request_id", sa.Text(), nullable=True),
        sa.Column("parent_model", sa.Text(), nullable=True),
        sa.Column("parent_version", sa.Integer(), nullable=True),
        sa.Column("source_event_id", sa.Text(), nullable=True),
        _json("tags"),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.UniqueConstraint("model_id", "number", name="uq_model_versions_model_number"),
        sa.CheckConstraint("number >= 1", name="ck_model_versions_number_positive"),
        sa.CheckConstraint(f"status IN ({status_list})", name="ck_model_versions_status_known"),
        sa.CheckConstraint("artifact_sha256 ~ '^[0-9a-f]{64}$'", name="ck_model_versions_sha256_hex"),
    )
    op.create_index("ix_model_versions_model_status_number", "model_versions", ["model_id", "status", "number"])
    op.create_index(
        "uq_model_versions_request_artifact",
        "model_versions",
        ["model_id", "training_request_id", "artifact_sha256"],
        unique=True,
    )


def _create_evaluations() -> None:
    op.create_table(
        "evaluations",
        _id(),
        _model_id(),
        sa.Column("candidate_version", sa.Integer(), nullable=False),
        sa.Column("baseline_version", sa.Integer(), nullable=True),
        _json("metrics"),
        _json("baseline_metrics"),
        sa.Column("decision", sa.Text(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=True),
        sa.Column("canary_weight", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("source_event_id", sa.Text(), nullable=True),
        _timestamp("created_at"),
    )
    op.create_index("ix_evaluations_model_candidate", "evaluations", ["model_id", "candidate_version"])


def _create_deployments() -> None:
    op.create_table(
        "deployments",
        sa.Column(
            "model_id", sa.BigInteger(), sa.ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("champion_version", sa.Integer(), nullable=True),
        sa.Column("challenger_version", sa.Integer(), nullable=True),
        sa.Column("canary_weight", sa.Float(), nullable=False, server_default="0"),
        sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("revision", sa.Integer(), nullable=False, server_default="0"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(
            ["model_id", "champion_version"],
            ["model_versions.model_id", "model_versions.number"],
            name="fk_deployments_champion",
        ),
        sa.ForeignKeyConstraint(
            ["model_id", "challenger_version"],
            ["model_versions.model_id", "model_versions.number"],
            name="fk_deployments_challenger",
        ),
        sa.CheckConstraint("canary_weight >= 0 AND canary_weight <= 1", name="ck_deployments_canary_weight_range"),
    )


def _create_history() -> None:
    op.create_table(
        "deployment_history",
        _id(),
        _model_id(),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("from_champion", sa.Integer(), nullable=True),
        sa.Column("to_champion", sa.Integer(), nullable=True),
        sa.Column("from_challenger", sa.Integer(), nullable=True),
        sa.Column("to_challenger", sa.Integer(), nullable=True),
        sa.Column("from_canary_weight", sa.Float(), nullable=False),
        sa.Column("to_canary_weight", sa.Float(), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source_event_id", sa.Text(), nullable=True),
        _timestamp("created_at"),
        sa.UniqueConstraint("model_id", "revision", name="uq_deployment_history_model_revision"),
    )
    # The history is append-only: the database itself refuses to change or delete a row.
    op.execute(
        "CREATE FUNCTION deployment_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'deployment_history is append-only'; END $$"
    )
    op.execute(
        "CREATE TRIGGER deployment_history_append_only BEFORE UPDATE OR DELETE ON deployment_history "
        "FOR EACH ROW EXECUTE FUNCTION deployment_history_append_only()"
    )


def _create_outbox() -> None:
    op.create_table(
        "outbox",
        _id(),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("type_name", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("partition_key", sa.Text(), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        _timestamp("created_at"),
        _timestamp("sent_at", nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index("ix_outbox_pending", "outbox", ["id"], postgresql_where=sa.text("sent_at IS NULL"))
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"], postgresql_where=sa.text("sent_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_table("applied_events")
    op.drop_table("outbox")
    op.execute("DROP TRIGGER deployment_history_append_only ON deployment_history")
    op.execute("DROP FUNCTION deployment_history_append_only()")
    op.drop_table("deployment_history")
    op.drop_table("deployments")
    op.drop_table("evaluations")
    op.drop_table("model_versions")
    op.drop_table("registered_models")
