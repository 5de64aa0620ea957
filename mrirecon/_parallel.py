"""Element-wise passes over large volumes, split across threads.

NumPy releases the GIL inside ufunc loops, so slabs of one large array can be
processed by several threads at once; memory-bound passes (copies, masks,
kernel multiplies) then run up to the machine's bandwidth instead of one
core's. The thread count is :func:`mrirecon.fft.n_threads`.
"""

from __future__ import annotations

import threading

import numpy as np

_lock = threading.Lock()
_state: dict = {}

_PARALLEL_MIN = 1 << 20  # elements; below this one thread is faster


def _pool():
    """A thread pool for element-wise passes over large volumes (NumPy releases the GIL)."""
    from .fft import n_threads

    with _lock:
        pool = _state.get("pool")
        if pool is None or _state.get("pool_size") != n_threads():
            from concurrent.futures import ThreadPoolExecutor

            if pool is not None:
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(max_workers=n_threads(), thread_name_prefix="mrirecon")
            _state["pool"], _state["pool_size"] = pool, n_threads()
        return pool


def elementwise(fn, out, *operands) -> None:
    """``fn(*operands, out=out)`` split into slabs along axis 0, one per thread.

    Operands of shape 1 along axis 0 (broadcast) are passed whole.
    """
    from .fft import n_threads

    threads = n_threads()
    if threads == 1 or out.size < _PARALLEL_MIN or out.shape[0] < threads:
        fn(*operands, out=out)
        return
    edges = np.linspace(0, out.shape[0], threads + 1).astype(int)

    def work(i):
        sl = slice(edges[i], edges[i + 1])
        fn(*[a if np.ndim(a) == 0 or a.shape[0] == 1 else a[sl] for a in operands], out=out[sl])

    list(_pool().map(work, range(threads)))
