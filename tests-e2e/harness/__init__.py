"""The e2e harness: private servers the tests may kill, and the platform's processes on them.

See tests-e2e/README.md for the API and how the fixtures use it.
"""

from harness.flows import archive_a_note
from harness.jobs import TERMINAL, wait_finished
from harness.otlp import OtlpReceiver, ReceivedSpan
from harness.platform import API, Platform, catalogue
from harness.polling import poll
from harness.postgres_server import PrivatePostgres
from harness.redis_server import PrivateRedis, RedisTls
from harness.stack import DEFAULT_ENV, private_platform

__all__ = [
    "API",
    "DEFAULT_ENV",
    "TERMINAL",
    "OtlpReceiver",
    "Platform",
    "PrivatePostgres",
    "PrivateRedis",
    "ReceivedSpan",
    "RedisTls",
    "archive_a_note",
    "catalogue",
    "poll",
    "private_platform",
    "wait_finished",
]
