"""The archiver's alembic revisions, applied by ``archiver migrate`` (``servicekit.migrations``).

Each revision creates its objects in ``context.config.attributes["schema"]``: the archiver's
schema, or the one ``DATABASE_SCHEMA`` names. There is no ``env.py``: servicekit runs alembic.
"""
