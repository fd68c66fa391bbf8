"""notes-api's alembic revisions of schema `notes`, applied by ``notes-api migrate``.

servicekit runs them (``servicekit.migrations.migrate``); there is no ``env.py``. Each revision
names schema ``notes`` itself: a revision must not change when the code's constant does.
"""
