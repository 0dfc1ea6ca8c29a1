"""The per-target time limit (``--timeout``): one alarm, shared by the CLI and the frontends."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Any, Iterator


class TimedOut(BaseException):
    """The time limit ran out. A BaseException, so that a model file's own ``except Exception``
    cannot swallow it."""

    def __str__(self) -> str:
        return f"timed out after {self.args[0]:g}s" if self.args else "timed out"


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TimedOut` in the block after ``seconds``.

    Main thread on POSIX only (elsewhere: no limit). Nests: when an enclosing deadline fires
    first it stays in charge, and an inner one re-arms the outer alarm for what is left of it.
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
    if outer_left and outer_left <= seconds:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimedOut(seconds)

    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left:
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - start), 1e-3))
