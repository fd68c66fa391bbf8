"""notes-api's ops port serves its AsyncAPI document: the streams it writes through its outbox."""

import httpx
from fastapi import FastAPI


async def test_ops_port_serves_what_notes_api_writes(app: FastAPI) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.state.ops.port}") as ops:
        response = await ops.get("/asyncapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["info"]["title"] == "notes-api"
    channels = document["channels"].values()
    assert {c["bindings"]["redis"]["method"] for c in channels} == {"xadd"}  # it reads nothing
    assert {"notes.created.v1", "jobs.archive.default", "jobs.delayed.v1"} <= {
        c["address"] for c in channels
    }
