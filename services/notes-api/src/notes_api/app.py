"""The public FastAPI app: composition root (engine, idempotency store, ops endpoint), no logic.

Serves only `/v1/...` and the OpenAPI document; `/metrics`, `/healthz`, `/readyz` (PostgreSQL
only: writes keep working while Redis is down, the outbox holds the events) and `/asyncapi.json`
(the streams it writes) are on `OPS_PORT`.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial

from fastapi import FastAPI
from opentelemetry import metrics
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from sqlalchemy.ext.asyncio import AsyncEngine

from notes_api.auth import KEY_LIKE, KEY_PREFIX
from notes_api.errors import install_problem_handlers
from notes_api.http import BodyGuard, RateLimits, RequestIds, RequestMetrics, RouteLimits
from notes_api.idempotency import IdempotencyStore
from notes_api.ratelimit import Limit, RateLimiter
from notes_api.routes import jobs, notes, operator
from notes_api.settings import NotesApiSettings
from servicekit import (
    OpsServer,
    Readiness,
    Telemetry,
    create_database_engine,
    create_redis,
    database_check,
    setup_telemetry,
)
from servicekit.asyncapi import asyncapi_json


def trace_sql(engine: AsyncEngine, telemetry: Telemetry) -> None:
    """SQL spans for this engine, with this process's tracer provider.

    `SQLAlchemyInstrumentor().instrument()` is not used: it declares SQLAlchemy < 2.1 (and so
    refuses 2.1), patches `create_engine` globally and instruments once per process; its per-engine
    `EngineTracer` hooks work unchanged on 2.1 (see test_observability).
    """
    tracer = telemetry.tracer_provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    usage = metrics.get_meter("notes_api.sql").create_up_down_counter("db.client.connections.usage")
    EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]


def autocommit_reads(engine: AsyncEngine) -> AsyncEngine:
    """The engine (same pool) for single-statement reads: no BEGIN and ROLLBACK round trips.

    One statement is its own consistent snapshot, so a read that issues one needs no transaction.
    """
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def route_limits(settings: NotesApiSettings) -> RouteLimits:
    def limit(name: str) -> Limit:
        per_second = getattr(settings, f"rate_limit_{name}_per_second")
        return Limit(name, per_second, getattr(settings, f"rate_limit_{name}_burst"))

    return RouteLimits(reads=limit("reads"), writes=limit("writes"), bulk=limit("bulk"))


def rate_limiter(settings: NotesApiSettings, telemetry: Telemetry) -> RateLimiter:
    """The limiter's own Redis client: it connects on first use, in the serving loop."""
    redis = create_redis(settings, timeout=settings.rate_limit_redis_timeout_seconds)
    return RateLimiter(
        redis, prefix=settings.stream_prefix, registry=telemetry.registry,
        timeout=settings.rate_limit_redis_timeout_seconds,
    )  # fmt: skip


def create_app(settings: NotesApiSettings, telemetry: Telemetry | None = None) -> FastAPI:
    telemetry = telemetry or setup_telemetry(settings)
    telemetry.redactor.add_shape(KEY_LIKE, hint=KEY_PREFIX)  # a key pasted into a URL or a body
    limiter = rate_limiter(settings, telemetry) if settings.rate_limits_enabled else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # No pre-ping: it is three round trips per checkout; a dropped connection fails one
        # request with 503 (Retry-After) and invalidates the rest of the pool instead.
        # No overflow: connections opened in a burst and closed as they return cost tens of ms
        # each in the burst; a burst wider than the pool waits for one instead (pool_timeout).
        engine = create_database_engine(
            settings,
            pool_timeout=settings.database_timeout_seconds,
            pre_ping=False,
            pool_size=settings.database_pool_size,
            max_overflow=0,
            registry=telemetry.registry,
        )
        trace_sql(engine, telemetry)
        app.state.settings = settings
        app.state.engine = engine
        app.state.readers = autocommit_reads(engine)
        app.state.idempotency = IdempotencyStore(
            engine,
            ttl=timedelta(hours=settings.idempotency_ttl_hours),
            lock=timedelta(seconds=settings.idempotency_lock_seconds),
        )
        # Its own one connection: probes never wait behind requests for the API's pool.
        probe_engine = create_database_engine(settings, pool_size=1, max_overflow=0)
        readiness = Readiness({"postgresql": database_check(probe_engine)})
        ops = OpsServer(
            registry=telemetry.registry,
            readiness=readiness,
            host=settings.ops_host,
            port=settings.ops_port,
            # No routes: the document lists the streams notes-api writes through its outbox.
            asyncapi=partial(asyncapi_json, settings.otel_service_name, ()),
        )
        await ops.start()
        app.state.ops = ops
        try:
            yield
        finally:
            await ops.stop()
            await probe_engine.dispose()
            await engine.dispose()
            if limiter is not None:
                await limiter.close()
            telemetry.shutdown()

    app = FastAPI(
        title="notes-api",
        version="1.0.0",
        description="Owner-scoped notes with job endpoints. Errors are RFC 9457 problem+json.",
        lifespan=lifespan,
    )
    app.include_router(notes.router)
    app.include_router(jobs.router)
    app.include_router(operator.router)
    install_problem_handlers(app, retry_after=settings.retry_after_seconds)
    app.add_middleware(BodyGuard, limit=settings.max_body_bytes)
    if limiter is not None:
        app.add_middleware(RateLimits, limiter=limiter, limits=route_limits(settings),
                           registry=telemetry.registry)  # fmt: skip
    # The routers' own routes: the app's list holds FastAPI's included-router wrappers.
    routes = [*notes.router.routes, *jobs.router.routes, *operator.router.routes]
    app.add_middleware(RequestMetrics, registry=telemetry.registry, routes=routes)
    app.add_middleware(RequestIds)  # outside the access log, so its line carries the id
    # No spans for each ASGI receive/send message: three per request that say nothing the
    # server span does not, at a measurable share of the request's CPU.
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=telemetry.tracer_provider, exclude_spans=["receive", "send"]
    )

    return app
