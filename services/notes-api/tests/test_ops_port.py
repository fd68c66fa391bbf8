"""notes-api's ops port: where it listens and what a readiness probe costs (issue 12, finding 7)."""

import asyncio

from notes_api.app import create_app
from notes_api.settings import NotesApiSettings
from servicekit import setup_telemetry


async def _get(port: int, path: str, host: str = "127.0.0.1") -> int:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return int(data.split()[1])


async def test_ops_port_listens_on_ops_host(settings: NotesApiSettings) -> None:
    local = settings.model_copy(update={"ops_host": "127.0.0.2"})
    app = create_app(local, setup_telemetry(local))
    async with app.router.lifespan_context(app):
        ops = app.state.ops
        assert {s.getsockname()[0] for s in ops._server.sockets} == {"127.0.0.2"}
        assert await _get(ops.port, "/healthz", host="127.0.0.2") == 200


async def test_readiness_probes_do_not_use_the_api_pool(settings: NotesApiSettings) -> None:
    app = create_app(settings, setup_telemetry(settings))
    async with app.router.lifespan_context(app):
        for _ in range(3):
            assert await _get(app.state.ops.port, "/readyz") == 200
        # The API pool opens connections lazily: none means no probe borrowed one.
        assert app.state.engine.pool.checkedin() == 0
