"""How many cores this process may really use, and bounding torch / BLAS / OpenMP threads
to that number.

``os.cpu_count()`` reports the host's cores, not the process's share: inside a container
or a CPU-limited cgroup it can be many times too high, and oversubscribed intra-op threads
spin against each other (a small fit ran 10-50x slower under load). The share is the
smallest of the CPU affinity mask, the cgroup v2 quota (``cpu.max``) or v1 quota
(``cpu.cfs_quota_us / cpu.cfs_period_us``), and ``HOLOMED_THREADS`` when set.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

_SET: int | None = None


def _cgroup_quota() -> float | None:
    try:
        v2 = Path("/sys/fs/cgroup/cpu.max")
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            if quota != "max":
                return int(quota) / int(period)
        q = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        p = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if q.exists() and p.exists():
            quota_i, period_i = int(q.read_text()), int(p.read_text())
            if quota_i > 0 and period_i > 0:
                return quota_i / period_i
    except (OSError, ValueError):
        return None
    return None


def available_cores() -> int:
    """Cores this process may use: affinity mask, cgroup quota (rounded up), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def cores() -> int:
    """The thread count holomed uses: ``set_threads``'s value, else ``HOLOMED_THREADS``,
    else :func:`available_cores`."""
    if _SET is not None:
        return _SET
    env = os.environ.get("HOLOMED_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return min(int(env), available_cores())
    return available_cores()


def set_threads(n: int | None = None) -> int:
    """Bound torch's intra-op threads and every BLAS/OpenMP pool (threadpoolctl) to ``n``
    (default :func:`cores`); returns the number used. Called by the CLI at start and by
    ``training.threads`` in a spec."""
    global _SET
    n = max(1, int(n)) if n else cores()
    _SET = n
    import torch
    from threadpoolctl import threadpool_limits

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    threadpool_limits(n)
    return n


@contextlib.contextmanager
def limit_threads(n: int | None = None) -> Iterator[None]:
    """BLAS/OpenMP pools bounded to ``n`` (default :func:`cores`) inside the block."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(n or cores()):
        yield


SMALL_NET = 2_000_000  # parameters; below this, one intra-op thread is fastest


@contextlib.contextmanager
def torch_threads_for(n_params: int, n: int | None = None) -> Iterator[int]:
    """torch intra-op threads for training a network of ``n_params`` parameters: ``n``
    when given (``training.threads``), else one thread for small networks (per-op work is
    too small to split: a 40-epoch fusion fit ran 4x slower on 2 threads than on 1 on an
    idle 2-core machine, and far slower when other processes share the cores), else
    :func:`cores`. The previous setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    want = n or (1 if n_params < SMALL_NET else cores())
    torch.set_num_threads(want)
    try:
        yield want
    finally:
        torch.set_num_threads(before)
