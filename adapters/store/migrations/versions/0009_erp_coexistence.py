"""A second ERP: which ERP booked each journal entry for which legal entity, what entities in
shadow also sent to their target ERP and the daily reports comparing the two, and each
entity's steps towards it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("posting_journal") as journal:
        journal.add_column(sa.Column("erp", sa.String(32), nullable=True))
        journal.add_column(sa.Column("entity", sa.String(32), nullable=True))
    op.create_index("ix_posting_journal_entity", "posting_journal", ["entity", "posted_at"])
    op.create_table(
        "shadow_postings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source_document_id", sa.String(128), nullable=False),
        sa.Column("erp", sa.String(32), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("document_type", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("erp_document_id", sa.String(255), nullable=False),
        sa.Column("erp_number", sa.String(64), nullable=True),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("source_document_id", "erp", name="uq_shadow_posting"),
    )
    op.create_index("ix_shadow_postings_entity", "shadow_postings", ["entity"])
    op.create_table(
        "shadow_reports",
        sa.Column("entity", sa.String(32), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("clean", sa.Boolean(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
    )
    op.create_table(
        "erp_mode_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("changed_by", sa.String(128), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.UniqueConstraint("entity", "mode", name="uq_erp_mode_change"),
        sa.CheckConstraint("mode IN ('shadow', 'cutover')", name="ck_erp_mode_changes_mode"),
    )


def downgrade() -> None:
    op.drop_table("erp_mode_changes")
    op.drop_table("shadow_reports")
    op.drop_index("ix_shadow_postings_entity", "shadow_postings")
    op.drop_table("shadow_postings")
    op.drop_index("ix_posting_journal_entity", "posting_journal")
    with op.batch_alter_table("posting_journal") as journal:
        journal.drop_column("entity")
        journal.drop_column("erp")
