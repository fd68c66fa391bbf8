"""From an HTTP request to a finished job, across notes-api, Redis Streams, archiver and back.

One platform for the module (private Redis and PostgreSQL, spans exported to the harness's OTLP
receiver); each test has its own owner.
"""

from __future__ import annotations

from harness import Platform, ReceivedSpan, archive_a_note, wait_finished

SERVER, PRODUCER, CONSUMER = 2, 4, 5  # opentelemetry.proto.trace.v1.Span.SpanKind


def test_archive_job_succeeds_and_archives_the_note(platform: Platform) -> None:
    job = archive_a_note(platform, "alice")
    assert job["type"] == "archive"


def _causal_chain(spans: list[ReceivedSpan]) -> list[ReceivedSpan] | None:
    """notes-api's HTTP span → the outbox relay's publish → the archiver's job span → (its
    notes.archived publish) → notes-api-worker's span for notes.archived, each the parent of the
    next; None until every link has arrived."""
    by_id = {s.span_id: s for s in spans}

    def parent(span: ReceivedSpan) -> ReceivedSpan | None:
        return by_id.get(span.parent_span_id or "")

    for worker in spans:
        if (worker.service, worker.kind, worker.name) != (
            "notes-api-worker",
            CONSUMER,
            "notes.archived.v1 process",
        ):
            continue
        published = parent(worker)
        archiver = published and parent(published)
        relay = archiver and parent(archiver)
        http = relay and parent(relay)
        if published and archiver and relay and http:
            return [http, relay, archiver, published, worker]
    return None


def test_the_archive_flow_is_one_trace_from_http_to_the_worker(platform: Platform) -> None:
    """The spans arrive through each process's real OTLP exporter at the harness's receiver."""
    assert platform.otlp is not None
    job = archive_a_note(platform, "tracy")

    trace = job["trace_id"]
    chain = platform.otlp.wait_for(lambda _: _causal_chain(platform.otlp.spans(trace)))  # type: ignore[union-attr]

    http, relay, archiver, published, _worker = chain
    assert (http.service, http.kind, http.name) == (
        "notes-api",
        SERVER,
        "POST /v1/notes/{note_id}/archive",
    )
    assert (relay.service, relay.kind) == ("notes-api-worker", PRODUCER)  # the outbox relay
    assert relay.name.startswith("{jobs.archive}")
    assert (archiver.service, archiver.kind) == ("archiver", CONSUMER)
    assert "jobs.archive" in str(archiver.attributes.get("messaging.destination.name"))
    assert (published.service, published.kind) == ("archiver", PRODUCER)
    assert all(s.trace_id == trace for s in chain)
    starts = [s.start_ns for s in chain]
    assert starts == sorted(starts), [str(s) for s in chain]  # causal order in time as well


def test_copy_job_creates_exactly_one_copy_for_the_same_owner(platform: Platform) -> None:
    with platform.client(platform.create_key("bob")) as client:
        source = client.post("/v1/notes", json={"title": "original", "body": "text"}).json()
        accepted = client.post(f"/v1/notes/{source['id']}/copy", json={"title": "copy"}).json()

        job = wait_finished(client, accepted["job_id"])

        assert job["status"] == "succeeded", job
        assert job["result"]["note_id"] != source["id"]
        copy = client.get(f"/v1/notes/{job['result']['note_id']}")
        assert copy.status_code == 200
        assert (copy.json()["title"], copy.json()["body"]) == ("copy", "text")
        titles = [n["title"] for n in client.get("/v1/notes").json()["items"]]
        assert sorted(titles) == ["copy", "original"]


def test_an_idempotency_key_replays_the_archive_request_with_one_effect(
    platform: Platform,
) -> None:
    owner = "idem"
    with platform.client(platform.create_key(owner)) as client:
        note = client.post("/v1/notes", json={"title": "once", "body": "b"}).json()
        headers = {"Idempotency-Key": "archive-once"}
        first = client.post(f"/v1/notes/{note['id']}/archive", json={}, headers=headers)
        job = wait_finished(client, first.json()["job_id"])
        again = client.post(f"/v1/notes/{note['id']}/archive", json={}, headers=headers)

        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert "Idempotent-Replayed" not in first.headers
        assert job["status"] == "succeeded", job
        jobs = client.get("/v1/jobs").json()["items"]
        assert [j["id"] for j in jobs if j["type"] == "archive"] == [first.json()["job_id"]]
    snapshots = "SELECT count(*) FROM archiver.snapshots WHERE owner_id = $1"
    assert platform.sql(snapshots, owner) == 1
