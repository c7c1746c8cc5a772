"""Reconciliation finds a ticket's billing credit by its case: index the case id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_recon_expected_case", "recon_expected", ["run_id", "case_id"])


def downgrade() -> None:
    op.drop_index("ix_recon_expected_case", table_name="recon_expected")
