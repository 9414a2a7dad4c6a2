"""Core statements of the hot write path, built once on first use and then reused: SQLAlchemy skips
rebuilding their cache keys, and psycopg keeps them prepared on each connection."""

from __future__ import annotations

import functools
from typing import Any, cast

from sqlalchemy import DateTime, Executable, Table, Text, bindparam, select, update
from sqlalchemy.dialects.postgresql import Insert, insert

from services.registry.adapters.orm import AppliedEvent, Base, ModelVersion, OutboxMessage, RegisteredModel


def table_of(entity: type[Base]) -> Table:
    """The Core table of a mapped class."""
    return cast(Table, entity.__table__)


def row_values(row: Base) -> dict[str, Any]:
    """A mapped object's column values, but its generated id: the parameters of a Core insert."""
    return {column.key: getattr(row, column.key) for column in table_of(type(row)).columns if column.key != "id"}


@functools.cache
def take_version_number() -> Executable:
    """Lock a model's row and count one more version: parameters ``model_name`` and ``now``."""
    table = table_of(RegisteredModel)
    return (
        update(table)
        .where(table.c.name == bindparam("model_name"))
        .values(latest_version=table.c.latest_version + 1, updated_at=bindparam("now"))
        .returning(table.c.id, table.c.latest_version)
    )


@functools.cache
def claim_event() -> Executable:
    """Insert an applied event (source, id) unless present; returns the id when it was inserted.

    Events applied before migration 0003 were recorded without their source (as ``''``): such an id counts
    as applied whatever source it comes from now, so a redelivery across the upgrade changes nothing.
    """
    table = table_of(AppliedEvent)
    legacy = select(table.c.event_id).where(table.c.source == "", table.c.event_id == bindparam("event_id"))
    row = select(
        bindparam("source", type_=Text),
        bindparam("event_id", type_=Text),
        bindparam("type_name", type_=Text),
        bindparam("applied_at", type_=DateTime(timezone=True)),
    ).where(~legacy.exists())
    return (
        insert(table)
        .from_select(["source", "event_id", "type_name", "applied_at"], row)
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(table.c.event_id)
    )


@functools.cache
def insert_version() -> Executable:
    """Insert a version unless the model has this request's artifact already; returns the id when inserted."""
    table = table_of(ModelVersion)
    unique = ["model_id", "training_request_id", "artifact_sha256"]
    return insert(table).on_conflict_do_nothing(index_elements=unique).returning(table.c.id)


@functools.cache
def insert_outbox() -> Insert:
    return insert(table_of(OutboxMessage))
