"""Cross-references, posting journal, append-only audit trail, webhook receipts.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

AUDIT_IMMUTABLE = "audit_trail is append-only"


def upgrade() -> None:
    op.create_table(
        "account_links",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("system", sa.String(16), primary_key=True),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("workflow_id", sa.String(255)),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("system", "external_id", name="uq_account_links_external"),
    )
    op.create_table(
        "posting_journal",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_system", sa.String(16), nullable=False),
        sa.Column("source_document_id", sa.String(128), nullable=False),
        sa.Column("document_type", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False, index=True),
        sa.Column("erp_document_id", sa.String(64), nullable=False),
        sa.Column("erp_number", sa.String(64)),
        sa.Column("amount", sa.Numeric(24, 6), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("correlation_id", sa.String(255)),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("source_system", "source_document_id", name="uq_posting_source"),
    )
    op.create_table(
        "audit_trail",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False, index=True),
        sa.Column("reason", sa.Text),
        sa.Column("amount", sa.Numeric(24, 6)),
        sa.Column("currency", sa.String(3)),
        sa.Column("correlation_id", sa.String(255)),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_table(
        "webhook_receipts",
        sa.Column("source", sa.String(16), primary_key=True),
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("event_type", sa.String(120), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The database itself refuses to rewrite history, whatever client touches it.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""
            CREATE FUNCTION audit_trail_append_only() RETURNS trigger AS $$
            BEGIN RAISE EXCEPTION '{AUDIT_IMMUTABLE}'; END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER audit_trail_append_only BEFORE UPDATE OR DELETE ON audit_trail "
            "FOR EACH ROW EXECUTE FUNCTION audit_trail_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_trail_no_{event.lower()} BEFORE {event} ON audit_trail "
                f"BEGIN SELECT RAISE(ABORT, '{AUDIT_IMMUTABLE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_trail_append_only ON audit_trail")
        op.execute("DROP FUNCTION audit_trail_append_only()")
    op.drop_table("webhook_receipts")
    op.drop_table("audit_trail")
    op.drop_table("posting_journal")
    op.drop_table("account_links")
