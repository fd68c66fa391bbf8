"""The console's settings: the services' own (REDIS_URL, STREAM_PREFIX, REDIS_CA_CERT) plus its own.

Operators are ``CONSOLE_TOKENS`` (``name:token`` pairs, comma-separated: the name goes into the
audit record) or one ``CONSOLE_TOKEN`` (audited as ``operator``). These are the console's own
credentials, never notes API keys.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from servicekit import ServiceSettings

MIN_TOKEN_LENGTH = 16


class ConsoleSettings(ServiceSettings):
    """Environment-only settings of the console process."""

    otel_service_name: str = "console"
    console_token: SecretStr | None = None
    console_tokens: SecretStr | None = Field(default=None, description="name:token,name:token")
    console_host: str = "127.0.0.1"
    console_port: int = Field(default=8090, ge=0, le=65535)
    console_cookie_secure: bool = Field(
        default=True, description="Secure session cookie (off only for plain-HTTP local runs)"
    )
    tempo_url: str | None = Field(default=None, description="Grafana/Tempo base for trace links")
    notes_api_url: str | None = Field(
        default=None,
        description="notes-api's base URL, for the job lookup (e.g. http://notes-api:8000)",
    )
    notes_api_operator_token: SecretStr | None = Field(
        default=None, description="One of notes-api's OPERATOR_TOKENS (never a notes API key)"
    )

    def job_lookup(self) -> tuple[str, str] | None:
        """notes-api's URL and the operator token, when both are set (else no job lookup)."""
        if not (self.notes_api_url and self.notes_api_operator_token):
            return None
        return self.notes_api_url, self.notes_api_operator_token.get_secret_value()

    def operators(self) -> dict[str, str]:
        """Operator name by token; refuses short tokens and an empty list (nobody could log in)."""
        found: dict[str, str] = {}
        if self.console_tokens is not None:
            for pair in self.console_tokens.get_secret_value().split(","):
                name, sep, token = pair.strip().partition(":")
                if not sep or not name:
                    raise ValueError("CONSOLE_TOKENS is name:token pairs, comma-separated")
                found[token] = name
        if self.console_token is not None:
            found[self.console_token.get_secret_value()] = "operator"
        if not found:
            raise ValueError("set CONSOLE_TOKEN or CONSOLE_TOKENS: the console has no operator")
        if any(len(token) < MIN_TOKEN_LENGTH for token in found):
            raise ValueError(f"console tokens must be at least {MIN_TOKEN_LENGTH} characters")
        return found

    def secrets(self) -> list[str]:
        """The services' secrets, every console token and the operator token (never logged)."""
        lookup = self.job_lookup()
        return [*super().secrets(), *self.operators(), *([lookup[1]] if lookup else [])]
