"""Wall time and peak resident memory of a block of work (psutil, sampled)."""

from __future__ import annotations

import threading
import time

import psutil


class Measure:
    """``with Measure() as m: ...`` then ``m.seconds``, ``m.peak_rss_mb`` (the process's
    peak RSS while the block ran, sampled every ``interval`` seconds)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.seconds = 0.0
        self.peak_rss_mb = 0.0

    def _watch(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, proc.memory_info().rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> Measure:
        self._stop = threading.Event()
        self.peak_rss_mb = psutil.Process().memory_info().rss / 2**20
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
