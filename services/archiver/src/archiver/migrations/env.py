"""alembic environment: runs on the connection ``archiver migrate`` passes in (online only)."""

import zlib

from alembic import context
from sqlalchemy import text

connection = context.config.attributes["connection"]
schema = context.config.attributes["schema"]

# Replicas may start `archiver migrate` together: one at a time, until the transaction ends.
connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(schema.encode())})
# The version table lives in the schema, which must exist before alembic creates it.
connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
context.configure(connection=connection, version_table_schema=schema)
with context.begin_transaction():
    context.run_migrations()
