"""tqdm progress bars that stay readable in log files.

In a terminal the bar refreshes as usual; when stderr is a file or a pipe (CI, a
job log), it writes at most one line every 30 seconds instead of ten a second.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(*args: Any, interval: float = 0.1, **kwargs: Any):
    """``tqdm.auto.tqdm(*args, **kwargs)`` refreshing every ``interval`` s in a terminal, 30 s otherwise."""
    from tqdm.auto import tqdm

    return tqdm(*args, mininterval=interval if sys.stderr.isatty() else 30.0, **kwargs)
