"""The journal's ERP document id holds what a finance decision journals besides ERP ids:
`manual:<ERP number>` and `rejected:<exception id>`, the latter naming the workflow it came
from, which can be longer than 64 characters.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TABLES = ("posting_journal", "recon_journal")


def upgrade() -> None:
    # Batch mode: SQLite alters a column by copying the table; PostgreSQL alters in place.
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "erp_document_id", type_=sa.String(255), existing_type=sa.String(64),
                existing_nullable=False,
            )  # fmt: skip


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "erp_document_id", type_=sa.String(64), existing_type=sa.String(255),
                existing_nullable=False,
            )  # fmt: skip
