"""Connection limits of `notes-api serve` on real sockets (issue 12, findings 1, 2 and 9's 400s).

The server runs in-process on a free port with short deadlines; PostgreSQL is real. Every wait
is a poll with a generous deadline: the assertions are "closed at all", never "closed in N ms".
"""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from notes_api.app import create_app
from notes_api.auth import create_key
from notes_api.server import build_server
from notes_api.settings import NotesApiSettings
from servicekit import setup_telemetry
from servicekit.testing import eventually

GENEROUS = 20.0  # far beyond every deadline below, so a busy machine does not fail the tests


@dataclass
class Served:
    port: int
    registry: CollectorRegistry

    def dropped(self, reason: str) -> float:
        value = self.registry.get_sample_value(
            "notes_api_http_connections_dropped_total", {"reason": reason}
        )
        return value or 0.0


@pytest.fixture
def limited(settings: NotesApiSettings) -> NotesApiSettings:
    return settings.model_copy(
        update={
            "host": "127.0.0.1",
            "port": 0,
            "http_receive_timeout_seconds": 1.0,
            "http_write_timeout_seconds": 1.0,
            "http_max_connections": 8,
        }
    )


@asynccontextmanager
async def running(settings: NotesApiSettings) -> AsyncIterator[Served]:
    telemetry = setup_telemetry(settings)
    server = build_server(create_app(settings, telemetry), settings, telemetry.registry)
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or serving.done())
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(port, telemetry.registry)
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def served(limited: NotesApiSettings) -> AsyncIterator[Served]:
    async with running(limited) as served:
        yield served


@pytest.fixture
async def alice_key(engine_direct: AsyncEngine) -> str:
    return (await create_key(engine_direct, "alice"))[1]


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    received = b""
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionError:
        pass
    return received


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def test_idle_connection_is_closed_after_the_receive_deadline(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    response = await asyncio.wait_for(read_until_closed(reader), GENEROUS)
    writer.close()
    assert response == b"" or status_of(response) == 408


async def test_header_trickled_a_byte_at_a_time_is_closed(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /v1/notes HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    closed = asyncio.create_task(read_until_closed(reader))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GENEROUS
    while not closed.done() and loop.time() < deadline:
        try:
            writer.write(b"a")  # the attack itself: one byte every 0.2 s
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.wait({closed}, timeout=0.2)
    assert closed.done(), "a trickled header kept its connection open"
    response = closed.result()
    writer.close()
    assert response == b"" or status_of(response) == 408


async def test_stalled_body_is_closed(served: Served, alice_key: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + alice_key.encode() + b"\r\n"
        b'Content-Length: 100\r\n\r\n{"title":'
    )
    await writer.drain()
    await asyncio.wait_for(read_until_closed(reader), GENEROUS)
    writer.close()


async def send_header_line(port: int, size: int) -> bytes:
    """Send a request whose one header is ``size`` bytes, reading as we go; return the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.create_task(read_until_closed(reader))
    chunk = b"a" * 65536
    try:
        writer.write(b"GET /v1/notes HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(size // len(chunk)):
            if answer.done():
                break
            writer.write(chunk)
            await writer.drain()
        writer.write(b"\r\n\r\n")
        await writer.drain()
    except ConnectionError:
        pass
    response = await asyncio.wait_for(answer, GENEROUS)
    writer.close()
    return response


async def test_a_16_mb_header_is_answered_431_problem_json(served: Served) -> None:
    response = await send_header_line(served.port, 16 * 1024 * 1024)
    head, _, body = response.partition(b"\r\n\r\n")
    assert status_of(response) == 431
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["status"] == 431


def resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_unfinished_huge_header_lines_do_not_grow_the_server(served: Served) -> None:
    before = resident_bytes()

    async def unfinished_line() -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", served.port)
        chunk = b"a" * 65536
        try:
            writer.write(b"GET /v1/notes HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(20 * 1024 * 1024 // len(chunk)):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()

    # Five 20 MB header lines never finished: 100 MB the server would buffer without a limit.
    # (Without one the connections stay open, so the sends complete and the test measures.)
    await asyncio.wait_for(asyncio.gather(*(unfinished_line() for _ in range(5))), GENEROUS * 3)
    grown = resident_bytes() - before
    assert grown < 40 * 1024 * 1024, f"server grew by {grown / 2**20:.0f} MB"


async def test_idle_sockets_beyond_the_cap_do_not_stop_a_keyed_request(
    served: Served, alice_key: str
) -> None:
    idle = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(20)]
    closed = [asyncio.create_task(read_until_closed(reader)) for reader, _ in idle]
    # The cap is 8: the oldest idle connections are shed to make room for newer ones.
    await eventually(lambda: sum(task.done() for task in closed) >= 12, within=GENEROUS)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http:
        response = await http.get("/v1/notes", headers={"Authorization": f"Bearer {alice_key}"})
    assert response.status_code == 200
    for task in closed:
        task.cancel()
    for _, writer in idle:
        writer.close()


async def test_unfinished_bodies_beyond_the_cap_do_not_stop_a_keyed_request(
    limited: NotesApiSettings, alice_key: str
) -> None:
    patient = limited.model_copy(
        update={"http_receive_timeout_seconds": 600.0, "http_max_connections": 4}
    )
    async with running(patient) as served:
        stalled = []
        for _ in range(6):
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(
                b"POST /v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            await writer.drain()
            stalled.append((asyncio.create_task(read_until_closed(reader)), writer))
        await eventually(lambda: sum(task.done() for task, _ in stalled) >= 2, within=GENEROUS)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http:
            response = await http.get("/v1/notes", headers={"Authorization": f"Bearer {alice_key}"})
        assert response.status_code == 200
        for task, writer in stalled:
            task.cancel()
            writer.close()


async def test_client_that_never_reads_its_responses_is_dropped(
    served: Served, alice_key: str
) -> None:
    auth = {"Authorization": f"Bearer {alice_key}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.port}") as http:
        for i in range(50):
            note = {"title": f"n{i}", "body": "x" * 60_000, "tags": []}
            assert (await http.post("/v1/notes", json=note, headers=auth)).status_code == 201
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window, never read
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", served.port))
    request = (
        f"GET /v1/notes?limit=100 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice_key}\r\n\r\n"
    ).encode()
    # Six pages of about 3 MB pipelined: more than the kernel's socket buffers can hold.
    await asyncio.get_running_loop().sock_sendall(sock, request * 6)
    await eventually(lambda: served.dropped("write_timeout") >= 1, within=GENEROUS * 2)
    sock.close()


async def test_malformed_http_is_answered_400_problem_json(served: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(b"GET /v1/notes HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    await writer.drain()
    response = await asyncio.wait_for(read_until_closed(reader), GENEROUS)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert status_of(response) == 400
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "Invalid HTTP request received.",
    }
