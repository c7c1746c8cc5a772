"""Reconciliation per ERP: the ERP a run reconciled, and for each billing posting a run
expects, the other ERP that books it (kept only to match support's tickets against the whole
of billing; NULL for the run's own ERP, and for every row of runs from before).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recon_runs") as runs:
        runs.add_column(sa.Column("erp", sa.String(32), nullable=True))
    with op.batch_alter_table("recon_expected") as expected:
        expected.add_column(sa.Column("other_erp", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recon_expected") as expected:
        expected.drop_column("other_erp")
    with op.batch_alter_table("recon_runs") as runs:
        runs.drop_column("erp")
