"""archiver: the platform's history store and the worker for archive and copy jobs."""
