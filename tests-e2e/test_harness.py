"""The harness's own promises, which the flows and the chaos scenarios rely on.

A killed private Redis comes back with what it acknowledged (AOF, appendfsync always) on the same
port; a private PostgreSQL keeps its data through a fast stop and through SIGKILL; the OTLP
receiver decodes what the real exporter sends; a platform runs several replicas of a process,
pauses and resumes one, and reports exit codes.
"""

from __future__ import annotations

import signal
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from harness import OtlpReceiver, PrivatePostgres, PrivateRedis, poll, private_platform


def test_a_killed_redis_restarts_on_its_port_with_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        with server.client() as client:
            for i in range(100):
                client.xadd("s", {"n": i})
        server.kill()
        assert not server.running
        port = server.port
        server.restart()
        assert server.port == port
        with server.client() as client:
            assert client.xlen("s") == 100
    finally:
        server.stop()


def test_a_postgres_keeps_its_data_through_a_stop_and_a_kill(tmp_path: Path) -> None:
    server = PrivatePostgres(tmp_path)
    try:
        server.start()
        url = server.create_database("kept")

        def count() -> int:
            import asyncio

            import asyncpg

            async def run() -> int:
                connection = await asyncpg.connect(url)
                try:
                    await connection.execute("CREATE TABLE IF NOT EXISTS t (n int)")
                    await connection.execute("INSERT INTO t VALUES (1)")
                    return int(await connection.fetchval("SELECT count(*) FROM t"))
                finally:
                    await connection.close()

            return asyncio.run(run())

        assert count() == 1
        server.stop()
        assert not server.running
        server.start()
        assert count() == 2  # committed rows survived the fast shutdown
        server.kill()
        assert not server.running
        server.start()
        assert count() == 3  # and the crash
    finally:
        server.remove()


def test_the_receiver_decodes_what_the_real_exporter_sends() -> None:
    with OtlpReceiver() as receiver:
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "probe"}))
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint + "/v1/traces"))
        )
        tracer = provider.get_tracer("harness")
        with (
            tracer.start_as_current_span("parent") as parent,
            tracer.start_as_current_span("child"),
        ):
            pass
        provider.shutdown()

        spans = receiver.wait_for(lambda spans: len(spans) == 2 and spans)
        by_name = {s.name: s for s in spans}
        trace_id = format(parent.get_span_context().trace_id, "032x")
        assert {s.service for s in spans} == {"probe"}
        assert {s.trace_id for s in spans} == {trace_id}
        assert by_name["child"].parent_span_id == by_name["parent"].span_id
        assert by_name["parent"].parent_span_id is None
        assert by_name["parent"].start_ns <= by_name["child"].start_ns


def test_a_platform_runs_replicas_pauses_resumes_and_reports_exit_codes(tmp_path: Path) -> None:
    with private_platform(tmp_path, start=False) as platform:
        first = platform.start("scheduler")
        second = platform.start("scheduler", replica=1)
        assert (first, second) == ("scheduler", "scheduler.1")
        assert platform.ops_url(first) != platform.ops_url(second)

        platform.pause(second)
        poll(lambda: not platform.ready(second), 10, "a paused process stops answering")
        platform.resume(second)
        poll(lambda: platform.ready(second), 30, "a resumed process answers again")

        assert platform.kill(second) == -signal.SIGKILL
        assert platform.restart(first) == 0  # SIGTERM: a graceful exit
        assert platform.ready(first)
        assert "scheduler" in platform.metrics(first)
        assert platform.close() == {"scheduler": 0}
