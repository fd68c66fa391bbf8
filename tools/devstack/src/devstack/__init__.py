"""Developer entry points for notes-platform: server resolution, ``make run``, the test plugin.

A tool, not a library: no service imports it, and no image installs it.
"""

from devstack.resolution import Choice, Resolved, ServerStack

__all__ = ["Choice", "Resolved", "ServerStack"]
