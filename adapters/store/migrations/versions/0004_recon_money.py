"""Reconciliation of money that moved: payments and refunds on both sides, tax per ERP tax
and document on both sides, and each customer's open receivable on both sides.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _run_id() -> "sa.Column[str]":
    return sa.Column(
        "run_id",
        sa.String(255),
        sa.ForeignKey("recon_runs.run_id", ondelete="CASCADE"),
        primary_key=True,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "recon_expected_payments",
        _run_id(),
        sa.Column("reference", sa.String(160), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
        sa.Column("applies_to", sa.String(160), nullable=False),
        sa.Column("billing_document_id", sa.String(128), nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_recon_expected_payments_amount_positive"),
    )
    op.create_table(
        "recon_erp_payments",
        _run_id(),
        sa.Column("erp_document_id", sa.String(64), primary_key=True),
        sa.Column("reference", sa.String(160)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
        sa.Column("applies_to", sa.String(160)),
        sa.Column("state", sa.String(16), nullable=False),
    )
    op.create_index(
        "ix_recon_erp_payments_reference", "recon_erp_payments", ["run_id", "reference"]
    )
    op.create_table(
        "recon_taxes",
        _run_id(),
        sa.Column("side", sa.String(8), primary_key=True),
        sa.Column("reference", sa.String(160), primary_key=True),
        sa.Column("tax", sa.String(160), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
    )
    op.create_table(
        "recon_receivables",
        _run_id(),
        sa.Column("side", sa.String(8), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), primary_key=True),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
    )


def downgrade() -> None:
    for table in ("recon_receivables", "recon_taxes", "recon_erp_payments",
                  "recon_expected_payments"):  # fmt: skip
        op.drop_table(table)
