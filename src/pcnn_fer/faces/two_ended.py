"""Work shared from both ends: this thread takes the items of a job from the front while a helper (the Ray engine's
actor pool, which needs seconds to start) takes them from the back, until the two meet; the results come out in item
order. Used by ``pcnn predict --engine ray`` so that the driver classifies the first inputs while Ray starts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

R = TypeVar("R")


class TwoEnded(Generic[R]):
    """Items ``0 .. count-1``: :meth:`results` runs ``near(item)`` here on items from the front, while a thread runs
    ``far(untaken)``: ``untaken()`` gives the items nobody has taken yet, from the back (descending; call it once,
    when ready to start), and ``far`` yields ``(item, results)`` in that order. An item both sides finish keeps the
    near side's results; the far side is stopped (:attr:`stop`) when it reaches an item the near side took."""

    def __init__(self, count: int, near: Callable[[int], list[R]],
                 far: Callable[[Callable[[], list[int]]], Iterator[tuple[int, list[R]]]]) -> None:
        self.count, self._near, self._far = count, near, far
        self._lock = threading.Condition()
        self._front, self._back = 0, count  # near takes _front next; far has done every item from _back on
        self._done: dict[int, list[R]] = {}
        self._error: BaseException | None = None
        self.stop = threading.Event()
        self.near_items = 0
        self.near_seconds = 0.0  # time the near side has spent on its items after the first (its warm-up)
        self.thread = threading.Thread(target=self._run_far, name="pcnn-far-end", daemon=True)

    def near_seconds_for(self, items: int) -> float:
        """Seconds the near side, at its pace after its first item (its warm-up), takes for ``items`` more items
        (infinite before it has done two)."""
        return items * self.near_seconds / (self.near_items - 1) if self.near_items > 1 else float("inf")

    def _untaken(self) -> list[int]:
        with self._lock:
            return list(range(self._back - 1, self._front - 1, -1))

    def _run_far(self) -> None:
        stream = None
        try:
            stream = self._far(self._untaken)
            for item, results in stream:
                with self._lock:
                    if item < self._front or self.stop.is_set():
                        break  # the near side has it (or everything): the two ends met
                    self._done[item] = results
                    self._back = item
                    self._lock.notify_all()
        except BaseException as e:  # noqa: BLE001 - handed to the near side, which raises it
            if not self.stop.is_set():
                self._error = e
        finally:
            if stream is not None and hasattr(stream, "close"):
                try:
                    stream.close()
                except Exception:  # noqa: BLE001 - stopping a stream that already failed
                    pass
            with self._lock:
                self._lock.notify_all()

    def results(self) -> Iterator[R]:
        """Every item's results in item order (the far side's kept until the near side reaches them)."""
        self.thread.start()
        try:
            while True:
                with self._lock:
                    if self._error is not None:
                        raise self._error
                    if self._front >= self._back:
                        break
                    item = self._front
                    self._front += 1
                began = time.perf_counter()
                results = self._near(item)
                if self.near_items:
                    self.near_seconds += time.perf_counter() - began
                self.near_items += 1
                yield from results
            self.stop.set()
            with self._lock:
                if self._error is not None:
                    raise self._error
                rest = [self._done.pop(item) for item in range(self._front, self.count)]
            for results in rest:
                yield from results
        finally:
            self.stop.set()


__all__ = ["TwoEnded"]
