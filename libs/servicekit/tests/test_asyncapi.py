"""AsyncAPI documents come from FastStream, built from route declarations and the catalogue."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

from contracts import (
    ArchiveRequested,
    JobStarted,
    JobSucceeded,
    NoteArchived,
    NoteCreated,
)
from contracts.streams import JOBS_LIFECYCLE, NOTES_ARCHIVED, NOTES_CREATED
from servicekit import OpsServer, Readiness
from servicekit.asyncapi import asyncapi_document, asyncapi_json
from servicekit.jobs import JobRouter
from servicekit.metrics import new_registry

router = JobRouter(group="archiver")


@router.job(ArchiveRequested, max_attempts=7)
async def archive_note(request: ArchiveRequested, store: object) -> None:
    """Freeze a version."""


@router.event(NoteCreated, stream=NOTES_CREATED)
async def keep_version(change: NoteCreated, store: object) -> None:
    """Keep the version the event carries."""


@router.event([JobStarted, JobSucceeded], stream=JOBS_LIFECYCLE)
async def record_status(event: JobStarted | JobSucceeded, store: object) -> None:
    """Record a job's status."""


def reading(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Channels the service reads, by address."""
    return {
        channel["address"]: channel
        for channel in document["channels"].values()
        if channel["bindings"]["redis"]["method"] == "xreadgroup"
    }


def payload_of(document: dict[str, Any], channel: dict[str, Any]) -> dict[str, Any]:
    (reference,) = channel["messages"].values()
    message = document["components"]["messages"][reference["$ref"].rsplit("/", 1)[1]]
    name = message["payload"]["$ref"].rsplit("/", 1)[1]
    schema: dict[str, Any] = document["components"]["schemas"][name]
    return schema


def test_every_stream_a_route_reads_is_a_channel_with_its_group_and_event_schema() -> None:
    document = asyncapi_document("archiver", router.routes)

    assert document["asyncapi"] == "3.0.0"
    read = reading(document)
    assert set(read) == {
        "jobs.archive.critical", "jobs.archive.default", "jobs.archive.low", NOTES_CREATED,
        JOBS_LIFECYCLE,
    }  # fmt: skip
    for channel in read.values():
        assert channel["bindings"]["redis"]["groupName"] == "archiver"
    assert payload_of(document, read["jobs.archive.low"])["title"] == "ArchiveRequested"
    assert "note_id" in payload_of(document, read["jobs.archive.low"])["properties"]
    assert payload_of(document, read[NOTES_CREATED])["title"] == "NoteCreated"
    assert "weight 6 of 10" in read["jobs.archive.critical"]["description"]
    assert "Key `{jobs.archive}.critical`" in read["jobs.archive.critical"]["description"]
    assert "`{jobs.archive}.critical.dlq`" in read["jobs.archive.critical"]["description"]


def test_a_stream_carrying_several_events_has_the_union_as_its_message() -> None:
    document = asyncapi_document("archiver", router.routes)

    union = payload_of(document, reading(document)[JOBS_LIFECYCLE])
    assert union["anyOf"] == [
        {"$ref": "#/components/schemas/JobStarted"},
        {"$ref": "#/components/schemas/JobSucceeded"},
    ]


def test_the_streams_a_service_writes_come_from_the_catalogue() -> None:
    document = asyncapi_document("archiver", ())

    written = {c["address"]: c for c in document["channels"].values()}
    assert {c["bindings"]["redis"]["method"] for c in written.values()} == {"xadd"}
    assert {NOTES_ARCHIVED, "notes.copy_completed.v1", JOBS_LIFECYCLE} <= set(written)
    assert NOTES_CREATED not in written  # notes-api's, not the archiver's
    assert payload_of(document, written[NOTES_ARCHIVED])["title"] == NoteArchived.__name__


def test_the_document_is_generated_without_warnings_and_is_deterministic() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastStream warns when channels or schemas collide
        first = asyncapi_json("archiver", router.routes)
    assert asyncapi_json("archiver", router.routes) == first


async def get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_ops_server_serves_the_document_built_once_on_first_request() -> None:
    builds: list[bytes] = []

    def build() -> bytes:
        builds.append(asyncapi_json("archiver", router.routes))
        return builds[-1]

    async with OpsServer(
        registry=new_registry(), readiness=Readiness(), host="127.0.0.1", port=0, asyncapi=build
    ) as server:
        status, body = await get(server.port, "/asyncapi.json")
        assert status == 200
        assert json.loads(body)["info"]["title"] == "archiver"
        assert await get(server.port, "/asyncapi.json") == (200, body)
    assert len(builds) == 1


async def test_ops_server_without_a_document_or_with_a_failing_one_says_so() -> None:
    def broken() -> bytes:
        raise RuntimeError("no")

    async with OpsServer(
        registry=new_registry(), readiness=Readiness(), host="127.0.0.1", port=0
    ) as plain:
        assert (await get(plain.port, "/asyncapi.json"))[0] == 404
    async with OpsServer(
        registry=new_registry(), readiness=Readiness(), host="127.0.0.1", port=0, asyncapi=broken
    ) as failing:
        assert (await get(failing.port, "/asyncapi.json"))[0] == 500
        assert (await get(failing.port, "/healthz"))[0] == 200


def test_a_process_that_only_writes_gets_a_document_of_what_it_writes() -> None:
    document = json.loads(partial(asyncapi_json, "notes-api", ())())
    addresses = {c["address"] for c in document["channels"].values()}
    assert NOTES_CREATED in addresses
    assert reading(document) == {}


PROBE_WORKER = Path(__file__).with_name("probe_worker.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_worker_starts_and_consumes_without_faststream_and_serves_its_document(
    redis_url: str, stream_prefix: str
) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "STREAM_PREFIX": stream_prefix,
        "OPS_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, str(PROBE_WORKER)], env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded_while_consuming"] is False
    assert report["status"] == "200"
    channels = report["document"]["channels"].values()
    assert [c["bindings"]["redis"]["groupName"] for c in channels] == ["probe"]
    assert report["loaded_after_request"] is True
    assert report["exit_code"] == 0
