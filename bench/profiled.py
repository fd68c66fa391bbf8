"""``python -m bench.profiled OUT MODULE [ARGS...]``: run a module under cProfile, CPU time only.

cProfile's default clock is wall time, which on a shared machine (and across the greenlet switches
of SQLAlchemy's asyncio bridge) mostly measures waiting; ``time.process_time`` counts this
process's CPU. The profile is written to OUT when the module returns (SIGTERM: the services shut
down gracefully and return).
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
