"""Three-way reconciliation: runs, their staging tables (billing, ERP, journal, support)
and the classified items.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def _run_id(primary_key: bool = True) -> "sa.Column[str]":
    return sa.Column(
        "run_id",
        sa.String(255),
        sa.ForeignKey("recon_runs.run_id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "recon_runs",
        sa.Column("run_id", sa.String(255), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("loaded", sa.JSON, nullable=False),
        sa.Column("totals", sa.JSON, nullable=False),
        sa.Column("healed_count", sa.Integer, nullable=False),
        sa.Column("exception_count", sa.Integer, nullable=False),
    )
    op.create_table(
        "recon_expected",
        _run_id(),
        sa.Column("reference", sa.String(160), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
        sa.Column("billing_document_id", sa.String(128), nullable=False),
        sa.Column("billing_kind", sa.String(16), nullable=False),
        sa.Column("is_credit", sa.Boolean, nullable=False),
        sa.Column("case_id", sa.String(64)),
        sa.CheckConstraint("amount > 0", name="ck_recon_expected_amount_positive"),
    )
    op.create_index(
        "ix_recon_expected_billing_document", "recon_expected", ["run_id", "billing_document_id"]
    )
    op.create_table(
        "recon_erp",
        _run_id(),
        sa.Column("erp_document_id", sa.String(64), primary_key=True),
        sa.Column("reference", sa.String(160)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("number", sa.String(64)),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
    )
    op.create_index("ix_recon_erp_reference", "recon_erp", ["run_id", "reference"])
    op.create_table(
        "recon_journal",
        _run_id(),
        sa.Column("posting_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("erp_document_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
    )
    op.create_index("ix_recon_journal_reference", "recon_journal", ["run_id", "reference"])
    op.create_table(
        "recon_support_credits",
        _run_id(),
        sa.Column("case_id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
        sa.Column("billing_document_id", sa.String(128)),
    )
    op.create_index(
        "ix_recon_support_credits_billing_document",
        "recon_support_credits",
        ["run_id", "billing_document_id"],
    )
    op.create_table(
        "recon_items",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        _run_id(primary_key=False),
        sa.Column("classification", sa.String(32), nullable=False),
        sa.Column("reference", sa.String(160)),
        sa.Column("kind", sa.String(16)),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
        sa.Column("billing_amount", sa.Numeric(24, 6)),
        sa.Column("erp_amount", sa.Numeric(24, 6)),
        sa.Column("journal_amount", sa.Numeric(24, 6)),
        sa.Column("billing_document_id", sa.String(128)),
        sa.Column("erp_document_ids", sa.Text),
        sa.Column("case_id", sa.String(64)),
        sa.Column("request_id", sa.String(64)),
        sa.Column("detail", sa.Text),
        sa.Column("remedy", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(32)),
        sa.Column("outcome_ref", sa.String(255)),
        sa.Column("outcome_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_recon_items_class", "recon_items", ["run_id", "classification", "id"])
    op.create_index("ix_recon_items_run", "recon_items", ["run_id", "id"])
    # The journal snapshot of a run selects by posting time.
    op.create_index("ix_posting_journal_posted_at", "posting_journal", ["posted_at"])


def downgrade() -> None:
    op.drop_index("ix_posting_journal_posted_at", "posting_journal")
    for table in (
        "recon_items",
        "recon_support_credits",
        "recon_journal",
        "recon_erp",
        "recon_expected",
        "recon_runs",
    ):
        op.drop_table(table)
