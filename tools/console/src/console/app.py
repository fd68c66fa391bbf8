"""The console's composition root: settings, one Redis client, auth, security headers, the views.

Every page needs an operator (session cookie or ``Authorization: Bearer <console token>``): 401
without one. Every POST that changes something needs the session cookie and its CSRF token: 403.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from console import job_pages, redrive_pages, stream_pages, views
from console.auth import Authenticator, NotAuthenticatedError
from console.jobs import JobLookup
from console.redrives import Redrives
from console.settings import ConsoleSettings
from servicekit import RedisClient, StreamKeys, create_redis
from servicekit.logs import SecretRedactor

HERE = Path(__file__).parent

# No inline script or style anywhere: the page's one script and stylesheet are files served here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer browsers send `Origin: null` even on the
    # console's own form posts, and the Origin check is how a cross-site POST is told apart.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(
    settings: ConsoleSettings, *, redis: RedisClient | None = None, jobs: JobLookup | None = None
) -> FastAPI:
    """The console for ``settings``; ``redis`` and ``jobs`` are used (not closed) when given.

    Otherwise the Redis client is created from the settings, and the job lookup too when
    ``NOTES_API_URL`` and ``NOTES_API_OPERATOR_TOKEN`` are set (else the job page says so).
    """
    lookup = settings.job_lookup()
    own_jobs = JobLookup(*lookup) if jobs is None and lookup else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = redis or create_redis(settings)
        app.state.redis = client
        try:
            yield
        finally:
            await app.state.redrives.stop()  # each records what it moved before it stopped
            if own_jobs is not None:
                await own_jobs.aclose()
            if redis is None:
                await client.aclose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.redis = redis
    app.state.keys = StreamKeys(settings.stream_prefix)
    app.state.redrives = Redrives(app.state.keys)
    app.state.jobs = jobs or own_jobs
    app.state.auth = Authenticator(settings.operators())
    app.state.settings = settings
    app.state.redactor = SecretRedactor(settings.secrets())  # masks payloads as logs are masked
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(views.router)
    app.include_router(stream_pages.router)
    app.include_router(redrive_pages.router)
    app.include_router(job_pages.router)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(NotAuthenticatedError)
    async def login_form(request: Request, _exc: NotAuthenticatedError) -> HTMLResponse:
        return views.login_page(request, status_code=401)

    return app
