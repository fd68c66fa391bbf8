"""`notes-api [serve|migrate|create-key --owner NAME|revoke-key KEY_OR_ID]` (serve by default)."""

import argparse
import asyncio
import gc
import sys
from collections.abc import Sequence

from notes_api.app import create_app
from notes_api.auth import create_key, revoke_key
from notes_api.processes import inherited_socket, server_settings, supervise
from notes_api.search_indexes import migrate_notes
from notes_api.server import build_server
from notes_api.settings import NotesApiSettings
from servicekit import create_database_engine, run_until_stopped, setup_telemetry


def serve(settings: NotesApiSettings) -> int:
    """Serve HTTP until SIGTERM/SIGINT, then drain in-flight requests and exit 0.

    With `SERVE_PROCESSES` > 1 this process supervises that many servers (`notes_api.processes`).
    """
    sock = inherited_socket()
    if sock is None and settings.serve_processes > 1:
        return supervise(settings)
    settings = server_settings(settings)
    telemetry = setup_telemetry(settings)
    server = build_server(create_app(settings, telemetry), settings, telemetry.registry)
    # Everything imported and built so far lives as long as the process: frozen, a full
    # collection no longer walks it. Full collections were the event loop's longest stalls
    # (140-865 ms while a 50,000-note bulk archive allocated; 39 ms with the freeze).
    gc.collect()
    gc.freeze()

    async def main(stop: asyncio.Event) -> int:
        # Our own signal handling, not uvicorn's: uvicorn re-raises the signal after a graceful
        # stop, so the process would end "killed by SIGTERM" instead of exiting 0.
        serving = asyncio.create_task(server.serve(sockets=[sock] if sock else None))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopping.cancel()
        await serving
        return 0

    return run_until_stopped(main)


async def _create_key(settings: NotesApiSettings, owner: str) -> int:
    engine = create_database_engine(settings)
    try:
        key_id, key = await create_key(engine, owner)
    finally:
        await engine.dispose()
    # The key alone on stdout, so that `export NOTES_API_KEY=$(make -s key owner=you)` works.
    print(f"created key {key_id} for owner {owner}; it is shown once:", file=sys.stderr)
    print(key)
    return 0


async def _revoke_key(settings: NotesApiSettings, key_or_id: str) -> int:
    engine = create_database_engine(settings)
    try:
        revoked = await revoke_key(engine, key_or_id)
    finally:
        await engine.dispose()
    print(f"revoked {revoked} key(s)")
    return 0 if revoked else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notes-api", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the HTTP API (the default)")
    commands.add_parser("migrate", help="upgrade schema `notes` to the latest revision")
    create = commands.add_parser("create-key", help="create an API key; prints it alone on stdout")
    create.add_argument("--owner", required=True)
    revoke = commands.add_parser("revoke-key", help="revoke an API key (by value or id)")
    revoke.add_argument("key")
    args = parser.parse_args(argv)
    settings = NotesApiSettings()
    if args.command == "migrate":
        setup_telemetry(settings).shutdown()  # logging, so alembic's lines are JSON too
        asyncio.run(migrate_notes(settings))
        return 0
    if args.command == "create-key":
        return asyncio.run(_create_key(settings, args.owner))
    if args.command == "revoke-key":
        return asyncio.run(_revoke_key(settings, args.key))
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
