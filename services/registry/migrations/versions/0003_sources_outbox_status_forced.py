"""Events are identified by (source, id); outbox rows carry a status and their trace; forced promotes are marked.

- ``applied_events``: the key becomes (source, event_id), as CloudEvents identifies an event. Rows applied
  before this revision get the source ``''``: their senders' sources were not recorded.
- ``outbox``: ``status`` (pending, sent, failed: a row that can never be published is parked, never
  retried, and never blocks the rows after it) and ``traceparent`` (the trace the change was made in).
- ``deployment_history.forced``: a rejected version promoted by hand, with ``force`` and a reason.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTBOX_STATUSES = ("pending", "sent", "failed")


def upgrade() -> None:
    op.add_column("applied_events", sa.Column("source", sa.Text(), nullable=False, server_default=""))
    op.alter_column("applied_events", "source", server_default=None)
    op.drop_constraint("pk_applied_events", "applied_events", type_="primary")
    op.create_primary_key("pk_applied_events", "applied_events", ["source", "event_id"])

    statuses = ", ".join(f"'{status}'" for status in OUTBOX_STATUSES)
    op.add_column("outbox", sa.Column("status", sa.Text(), nullable=False, server_default="pending"))
    op.execute("UPDATE outbox SET status = 'sent' WHERE sent_at IS NOT NULL")
    op.create_check_constraint("ck_outbox_status_known", "outbox", f"status IN ({statuses})")
    op.add_column("outbox", sa.Column("traceparent", sa.Text(), nullable=True))
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.create_index("ix_outbox_pending", "outbox", ["id"], postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_outbox_failed", "outbox", ["id"], postgresql_where=sa.text("status = 'failed'"))

    op.add_column("deployment_history", sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("deployment_history", "forced")

    op.drop_index("ix_outbox_failed", table_name="outbox")
    op.drop_index("ix_outbox_pending", table_name="outbox")
    op.create_index("ix_outbox_pending", "outbox", ["id"], postgresql_where=sa.text("sent_at IS NULL"))
    op.drop_column("outbox", "traceparent")
    op.drop_constraint("ck_outbox_status_known", "outbox", type_="check")
    # A parked row was never published: back in the old schema it is pending again.
    op.drop_column("outbox", "status")

    op.execute("DELETE FROM applied_events a USING applied_events b WHERE a.event_id = b.event_id AND a.ctid > b.ctid")
    op.drop_constraint("pk_applied_events", "applied_events", type_="primary")
    op.create_primary_key("pk_applied_events", "applied_events", ["event_id"])
    op.drop_column("applied_events", "source")
