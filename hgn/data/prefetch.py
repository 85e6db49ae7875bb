"""Random training batches from a store larger than memory, at the rate a device trains.

A uniformly random row of a :class:`~hgn.data.store.ChunkedArray` costs the decoding of
its whole chunk (16 sequences of 64×64 frames: 6 MB), so a batch of 16 random rows
decoded ~100 MB for 6 MB of data, on the training thread. Instead (measured in
``benchmarks/bench_data.py --loader``):

* :class:`ChunkShuffle`, a chunk-aware order: each epoch visits the chunks in a random
  order, ``window`` chunks at a time, and shuffles the rows of those chunks among
  themselves; batches take consecutive rows of that order. A decoded chunk then serves
  every one of its rows within a few batches. The trajectories of a chunk are
  independent draws of the generator, so mixing the rows of a few random chunks makes
  as good a batch as rows of the whole store.
* :class:`ChunkBatches`, background threads that build whole batches ahead of the
  training step (decode, cut the windows, convert to float frames), holding only the
  chunks that batches in flight still need and a few more, so memory stays a few
  windows of chunks, not the store.

Everything a batch holds is a function of (seed, step): the order, and the windows'
start frames (from NumPy generators seeded by both), so a resumed run reads exactly
what the uninterrupted one would have, with no state to save, and every DDP rank knows
the global batch without talking to the others.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from hgn.data.dataset import to_frames
from hgn.data.store import ChunkedArray, empty


class ChunkShuffle:
    """The rows of every global batch (``batch`` rows) of a chunked array of ``n`` rows,
    ``rows_per_chunk`` per chunk, drawn ``window`` chunks at a time (see the module doc).

    Epoch ``e`` is the rows of a random permutation of the chunks (from ``(seed, e)``),
    grouped ``window`` chunks at a time, each group's rows in a random order; batch ``k``
    is rows ``k·batch … (k+1)·batch`` of the epochs laid end to end, the rows left at an
    epoch's end (fewer than a batch) dropped. Every row is read once an epoch.
    """

    def __init__(self, n: int, rows_per_chunk: int, batch: int, window: int, seed: int) -> None:
        if n < batch:
            raise ValueError(f"a batch of {batch} rows needs at least as many, got {n}")
        self.n, self.rows, self.batch, self.window = n, rows_per_chunk, batch, window
        self.seed = seed
        self.per_epoch = n // batch
        self._orders: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def order(self, epoch: int) -> np.ndarray:
        """Every row of ``epoch`` in its reading order (the last two epochs are kept)."""
        with self._lock:
            if epoch in self._orders:
                return self._orders[epoch]
            rng = np.random.default_rng([self.seed, epoch])
            chunks = rng.permutation(-(-self.n // self.rows))
            rows = (chunks[:, None] * self.rows + np.arange(self.rows)).ravel()
            group = np.repeat(np.arange(len(chunks)) // self.window, self.rows)
            keep = rows < self.n  # the last chunk may be short
            rows, group = rows[keep], group[keep]
            order = rows[np.lexsort((rng.random(len(rows)), group))]
            self._orders[epoch] = order
            while len(self._orders) > 2:
                self._orders.popitem(last=False)
            return order

    def __call__(self, k: int) -> np.ndarray:
        """The rows of global batch ``k``."""
        epoch, index = divmod(k, self.per_epoch)
        return self.order(epoch)[index * self.batch : (index + 1) * self.batch].copy()


class ChunkCache:
    """Decoded chunks of a :class:`ChunkedArray`, shared by threads: each chunk is decoded
    once, by the first thread that needs it, into a buffer of its own (the array's
    scratch buffer is not shared); :meth:`trim` lets go of chunks no batch in flight
    needs, beyond ``keep`` of them (least recently used first)."""

    def __init__(self, array: ChunkedArray, keep: int) -> None:
        self.array, self.keep = array, keep
        self.chunks: OrderedDict[int, Future[np.ndarray]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, chunk: int) -> np.ndarray:
        """Chunk ``chunk``'s rows, decoded."""
        with self.lock:
            future = self.chunks.get(chunk)
            mine = future is None
            if future is None:
                future = self.chunks[chunk] = Future()
            self.chunks.move_to_end(chunk)
        if mine:
            try:
                future.set_result(self._decode(chunk))
            except BaseException as exc:
                future.set_exception(exc)
                with self.lock:
                    self.chunks.pop(chunk, None)
        return future.result()

    def _decode(self, chunk: int) -> np.ndarray:
        array = self.array
        first = chunk * array.rows
        count = min(array.rows, len(array) - first)
        out = empty((array.rows, *array.shape[1:]), array.dtype)
        array._decode(array._fetch([chunk])[chunk], out)  # a short last chunk decodes whole
        return out[:count]

    def trim(self, needed: set[int]) -> None:
        with self.lock:
            spare = [c for c in self.chunks if c not in needed]
            for chunk in spare[: max(0, len(spare) - self.keep)]:
                del self.chunks[chunk]


class ChunkBatches:
    """Training windows ``(batch, frames, 3, H, W)`` of a chunked image array, batch
    ``step`` built by background threads before it is asked for (see the module doc).

    The global batch is ``batch · world`` rows of :class:`ChunkShuffle`; this rank keeps
    rows ``rank · batch …``; each window starts at a frame drawn from ``(seed, step)``.
    ``ahead`` batches are built in advance by ``workers`` threads (NumPy's copies, the
    codec and torch release the interpreter lock, so two threads use two cores).
    """

    def __init__(
        self,
        images: ChunkedArray,
        frames: int,
        batch: int,
        device: torch.device,
        *,
        seed: int,
        rank: int = 0,
        world: int = 1,
        window: int = 8,
        ahead: int = 4,
        workers: int = 2,
    ) -> None:
        self.images, self.frames, self.batch, self.device = images, frames, batch, device
        self.seed, self.rank, self.ahead = seed, rank, ahead
        self.order = ChunkShuffle(len(images), images.rows, batch * world, window, seed)
        self.cache = ChunkCache(images, keep=2 * window)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="hgn-batches")
        self.pending: dict[int, Future[torch.Tensor]] = {}

    def plan(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This rank's rows of batch ``step`` and their windows' first frames."""
        total = self.order.batch
        rows = self.order(step)
        starts = np.random.default_rng([self.seed, step, 1]).integers(
            self.images.shape[1] - self.frames + 1, size=total
        )
        mine = slice(self.rank * self.batch, (self.rank + 1) * self.batch)
        return rows[mine], starts[mine]

    def build(self, step: int) -> torch.Tensor:
        """Batch ``step``, read and converted on the calling thread."""
        rows, starts = self.plan(step)
        out = empty((len(rows), self.frames, *self.images.shape[2:]), self.images.dtype)
        chunk_of = rows // self.images.rows
        times = starts[:, None] + np.arange(self.frames)
        for chunk in np.unique(chunk_of).tolist():  # a loop over chunks, not samples
            where = np.flatnonzero(chunk_of == chunk)
            local = rows[where] - chunk * self.images.rows
            out[where] = self.cache.get(chunk)[local[:, None], times[where]]
        return to_frames(torch.from_numpy(out), self.device)

    def __call__(self, step: int) -> torch.Tensor:
        """Batch ``step``; batches ``step + 1 … step + ahead`` start building."""
        future = self.pending.pop(step, None)
        for later in [k for k in self.pending if not step < k <= step + self.ahead]:
            self.pending.pop(later).cancel()  # a jump (a resume in the same process)
        for later in range(step + 1, step + 1 + self.ahead):
            if later not in self.pending:
                self.pending[later] = self.pool.submit(self.build, later)
        needed = {step, *self.pending}
        self.cache.trim({int(c) for k in needed for c in self.plan(k)[0] // self.images.rows})
        return future.result() if future is not None else self.build(step)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
