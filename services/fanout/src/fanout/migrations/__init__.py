"""fanout's alembic revisions, applied by ``fanout migrate`` (``servicekit.migrations``).

Each revision creates its objects in ``context.config.attributes["schema"]``: fanout's schema, or
the one ``DATABASE_SCHEMA`` names. There is no ``env.py``: servicekit runs alembic.
"""
