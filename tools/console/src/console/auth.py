"""Who may use the console, and proof that a form was sent by the console's own page.

A token (``Authorization: Bearer`` or the login form) is compared with every configured one in
constant time. The login sets a session cookie (HttpOnly, SameSite=Strict) signed with a key that
lives as long as the process; every state-changing POST needs that cookie and a CSRF token derived
from it (an HMAC of the cookie), and a cross-site ``Origin`` is refused: 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

SESSION_COOKIE = "console_session"
SESSION_SECONDS = 8 * 3600


class NotAuthenticatedError(Exception):
    """No operator credential, or not a valid one: 401 with the login form."""


class Authenticator:
    """Tokens to operators, sessions to operators, sessions to CSRF tokens."""

    def __init__(self, operators: dict[str, str], *, key: bytes | None = None) -> None:
        self._operators = {token.encode(): name for token, name in operators.items()}
        self._key = key or secrets.token_bytes(32)

    def operator_for_token(self, token: str | None) -> str | None:
        """The operator holding ``token``; every configured token is compared, in constant time."""
        if not token:
            return None
        given, found = token.encode(), None
        for known, name in self._operators.items():
            if hmac.compare_digest(given, known):
                found = name
        return found

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def new_session(self, operator: str, *, now: float | None = None) -> str:
        """A cookie value naming ``operator``, valid for :data:`SESSION_SECONDS`."""
        expires = int((now or time.time()) + SESSION_SECONDS)
        name = base64.urlsafe_b64encode(operator.encode()).decode()
        payload = f"{name}.{expires}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._sign(payload)}"

    def operator_for_session(self, cookie: str | None, *, now: float | None = None) -> str | None:
        """The operator a valid, unexpired session cookie names."""
        if not cookie or cookie.count(".") != 3:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        name, expires, _nonce = payload.split(".")
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        return base64.urlsafe_b64decode(name.encode()).decode()

    def csrf_token(self, cookie: str) -> str:
        """The CSRF token bound to one session cookie."""
        return self._sign(f"csrf:{cookie}")

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        """Whether ``token`` is the CSRF token of session ``cookie``."""
        return bool(cookie and token) and hmac.compare_digest(
            str(token), self.csrf_token(str(cookie))
        )


def same_origin(origin: str | None, host: str | None) -> bool:
    """No ``Origin`` (not a cross-site browser request) or one naming this host."""
    if origin is None:
        return True
    return bool(host) and urlsplit(origin).netloc == host


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header."""
    scheme, _, token = (header or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None
