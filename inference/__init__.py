"""Runnable drivers: ``python -m inference.fit``, ``inference.compare``, ``inference.diagnose``, ``inference.evaluate``."""

from __future__ import annotations

import sys
from typing import Callable


def run_cli(main: Callable[[], object]) -> int:
    """Run a driver's ``main``; a problem with the user's input becomes one line and exit code 2."""
    from pyro_gen.infer.checkpoint import CheckpointError
    from pyro_gen.data import DataNotFoundError
    from pyro_gen.infer.train import NonFiniteLossError

    try:
        main()
    except (FileNotFoundError, DataNotFoundError, CheckpointError, NonFiniteLossError, ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
