"""Alembic environment: the URL comes from the caller (IntegrationStore.migrate) or -x url=."""

from alembic import context
from sqlalchemy import create_engine

from adapters.store.models import Base

config = context.config
url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
if not url:
    raise SystemExit("no database URL: pass -x url=... or use IntegrationStore.migrate()")


def run_migrations_online() -> None:
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
