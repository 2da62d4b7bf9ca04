"""Reading the next chunk of a trace while the engine runs this one.

The compiled tier's loop releases the GIL, so a reader thread can read, decompress,
parse and check the next chunk on the other core meanwhile. The consumer sees exactly
the sequence (and the exception, at the same place) that iterating the chunks itself
would give.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

T = TypeVar("T")

AHEAD = 1  #: items a reader thread makes ahead of the one the consumer holds
#: Items the consumer may still hold while the reader makes the next: the one it runs
#: and those read ahead (slatframe.workload.checked_chunks checks fresh chunks against them).
HELD = AHEAD + 1

_END = object()


class _Raised:
    """An exception the reader met, delivered where the consumer would have met it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetched(items: Iterator[T], ahead: int = AHEAD) -> Iterator[T]:
    """Yield ``items`` in order, computed up to ``ahead`` items in advance by a thread.

    When the consumer stops early (an exception, ``break``, the generator closed), the
    thread stops at its next item and ``items`` is closed in it."""
    q: queue.Queue = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    break
            else:
                put(_END)
        except BaseException as exc:  # delivered to the consumer, in order
            put(_Raised(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="slatframe-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join()
