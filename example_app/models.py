"""The example CRM's models: what ``flask safe-migrate generate`` compares."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
import sqlalchemy.orm as sa_orm
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


class Lead(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy's dynamic base
    """A sales lead."""

    __tablename__ = "leads"

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.BigInteger, primary_key=True)
    name: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.Text)
    email: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.Text)
    created_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("now()")
    )
    order_index: sa_orm.Mapped[int | None] = sa_orm.mapped_column(sa.BigInteger)


class Message(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy's dynamic base
    """A message from a provider, at most once per provider message id."""

    __tablename__ = "messages"
    __table_args__ = (
        sa.Index(
            "messages_provider_msg_id_key",
            "provider_msg_id",
            unique=True,
            postgresql_where=sa.text("provider_msg_id IS NOT NULL"),
        ),
    )

    id: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.BigInteger, primary_key=True)
    lead_id: sa_orm.Mapped[int | None] = sa_orm.mapped_column(sa.BigInteger, index=True)
    provider_msg_id: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.Text)
    body: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.Text)
    created_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("now()")
    )
