"""Ctrl-C during training: Lightning swallows it, so the train step turns it into an exception of
its own (:func:`interruptible`) and the run can be marked KILLED, its checkpoints kept for resume."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from glasswork.errors import Interrupted


@contextmanager
def interruptible(hint: str) -> Iterator[None]:
    """Turn Ctrl-C inside the block into :class:`~glasswork.errors.Interrupted` carrying ``hint``.

    Lightning catches ``KeyboardInterrupt`` in ``fit``, ignores every later Ctrl-C and exits with
    status 1, so the run could not be marked KILLED nor a hung shutdown stopped. The first Ctrl-C
    here raises an exception Lightning passes on; a second one raises ``KeyboardInterrupt``
    wherever the process is, as usual.
    """
    if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread
        yield
        return

    def stop(signum, frame):
        if _in_database_call(frame):
            # Raised inside an SQLite write (MLflow logging a metric), the exception would leave
            # that connection holding the database's lock, and marking the run KILLED would then
            # fail with "database is locked" (seen once in CI's SIGINT test). Deliver the same
            # Ctrl-C again a moment later, once the write is done.
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise Interrupted(hint)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


DATABASE_MODULES = ("sqlite3", "sqlalchemy", "mlflow.store", "alembic")


def _in_database_call(frame) -> bool:
    """Whether the interrupted code is inside a database call (any frame of the stack)."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(DATABASE_MODULES):
            return True
        frame = frame.f_back
    return False
