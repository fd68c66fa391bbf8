"""What a Redis that requires TLS and per-service users needs: a test CA and the shipped ACL file.

The CA and the server certificate come from ``trustme`` (a throwaway CA, made for tests). The
users are the deploy stack's own, ``deploy/redis/users.acl.template`` rendered with test passwords
by ``deploy/tests/acl_redis.py`` (the function the deploy tests check the grants with), so the
e2e flow proves the grants that ship.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import trustme

from harness.platform import ROOT
from harness.redis_server import RedisTls

__all__ = ["acl_password", "make_tls", "render_acl"]

ADMIN = "admin"


def make_tls(directory: Path) -> RedisTls:
    """A new CA and a certificate for 127.0.0.1/localhost signed by it, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    files = RedisTls(
        cert=directory / "server.pem", key=directory / "server.key", ca=directory / "ca.pem"
    )
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    server.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    return files


def _acl_module():  # type: ignore[no-untyped-def]
    # deploy/ is not a package: its tests import stack.py from their folder, and so do we.
    for folder in (ROOT / "deploy", ROOT / "deploy" / "tests"):
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    return importlib.import_module("acl_redis")


def render_acl(path: Path) -> Path:
    """Write the stack's ACL file with test passwords to ``path``; return it."""
    path.write_text(_acl_module().render_acl())
    return path


def acl_password(user: str) -> str:
    """The test password of ACL user ``user``."""
    return str(_acl_module().password(user))
