"""Element-wise passes over large volumes, split across threads.

NumPy releases the GIL inside ufunc loops, so slabs of one large array can be
processed by several threads at once; memory-bound passes (copies, masks,
kernel multiplies) then run up to the machine's bandwidth instead of one
core's. The thread count is :func:`mrirecon.threads.n_threads`.
"""

from __future__ import annotations

import threading

import numpy as np

from .threads import n_threads

_lock = threading.Lock()
_state: dict = {}

_PARALLEL_MIN = 1 << 20  # elements; below this one thread is faster


def _pool():
    """A thread pool for element-wise passes over large volumes (NumPy releases the GIL)."""
    with _lock:
        pool = _state.get("pool")
        if pool is None or _state.get("pool_size") != n_threads():
            from concurrent.futures import ThreadPoolExecutor

            if pool is not None:
                pool.shutdown(wait=False)
            pool = ThreadPoolExecutor(max_workers=n_threads(), thread_name_prefix="mrirecon")
            _state["pool"], _state["pool_size"] = pool, n_threads()
        return pool


_BLOCK_BYTES = 1 << 18  # a few planes of a volume: stays in L2 between fused passes


def fused(fn, out, *operands) -> None:
    """``fn(out_block, *operand_blocks)`` over blocks of axis 0, threads taking contiguous runs.

    ``fn`` may run several ufuncs on its block: each block is small enough
    (about 256 KiB) to stay in cache between them, so a chain of element-wise
    steps costs one pass over memory instead of one per step. Operands of size
    1 along axis 0 (broadcast) or 0-d are passed whole.
    """
    n0 = out.shape[0] if out.ndim else 1
    plane = max(1, out.nbytes // max(n0, 1))
    step = max(1, _BLOCK_BYTES // plane)
    threads = n_threads() if out.size >= _PARALLEL_MIN else 1
    threads = max(1, min(threads, n0 // step or 1))

    def part(a, sl):
        return a if np.ndim(a) == 0 or a.shape[0] == 1 else a[sl]

    def run(lo, hi):
        for start in range(lo, hi, step):
            sl = slice(start, min(start + step, hi))
            fn(out[sl], *[part(a, sl) for a in operands])

    if threads == 1:
        run(0, n0)
        return
    edges = np.linspace(0, n0, threads + 1).astype(int)
    list(_pool().map(lambda i: run(edges[i], edges[i + 1]), range(threads)))


def elementwise(fn, out, *operands) -> None:
    """``fn(*operands, out=out)`` split into slabs along axis 0, one per thread.

    Operands of shape 1 along axis 0 (broadcast) are passed whole.
    """
    threads = n_threads()
    if threads == 1 or out.size < _PARALLEL_MIN or out.shape[0] < threads:
        fn(*operands, out=out)
        return
    edges = np.linspace(0, out.shape[0], threads + 1).astype(int)

    def work(i):
        sl = slice(edges[i], edges[i + 1])
        fn(*[a if np.ndim(a) == 0 or a.shape[0] == 1 else a[sl] for a in operands], out=out[sl])

    list(_pool().map(work, range(threads)))


def concurrently(*fns):
    """Call the independent thunks ``fns`` on threads at once; their results, in order.

    For independent single-threaded steps on host arrays (SciPy's ndimage filters
    and NumPy's ufuncs release the GIL), so that both of a two-core machine's cores
    work. The threads are new ones, not :func:`_pool`'s, so a thunk may itself use
    :func:`fused` or :func:`elementwise` without waiting on its own pool. With one
    usable core, or one thunk, they run in order here. The first exception raised
    (in the order of ``fns``) propagates.
    """
    if len(fns) <= 1 or n_threads() == 1:
        return [f() for f in fns]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(fns), n_threads()), thread_name_prefix="mrirecon-step") as ex:
        futures = [ex.submit(f) for f in fns]
        return [f.result() for f in futures]
