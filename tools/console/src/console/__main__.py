"""`console`: serve the operations console (settings from the environment only)."""

import uvicorn

from console.app import create_app
from console.settings import ConsoleSettings
from servicekit.logs import configure_logging


def main() -> None:
    """Run the console on ``CONSOLE_HOST:CONSOLE_PORT`` until stopped."""
    settings = ConsoleSettings()
    configure_logging(service=settings.otel_service_name, level=settings.log_level,
                      fmt=settings.log_format, secrets=settings.secrets())  # fmt: skip
    # log_config=None: uvicorn's records go through servicekit's JSON pipeline, secrets scrubbed.
    uvicorn.run(create_app(settings), host=settings.console_host, port=settings.console_port,
                log_config=None, proxy_headers=True, server_header=False)  # fmt: skip


if __name__ == "__main__":
    main()
