"""notes-api: the owner-scoped notes HTTP API and its worker (one package, two entry points)."""
