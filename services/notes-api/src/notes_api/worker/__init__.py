"""notes-api-worker: the outbox relay, and consumers applying job results to notes data."""
