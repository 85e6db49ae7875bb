"""Random training batches from a store larger than memory, at the rate a device trains.

A uniformly random row of a :class:`~hgn.data.store.ChunkedArray` costs the decoding of
its whole chunk (16 sequences of 64×64 frames: 6 MB), so a batch of 16 random rows
decoded ~100 MB for 6 MB of data, on the training thread. Two changes, measured in
``benchmarks/bench_data.py``:

* :class:`ChunkShuffle`, a chunk-aware order: each epoch visits the chunks in a random
  order, ``window`` chunks at a time, and shuffles the rows of those chunks among
  themselves; batches take consecutive rows of that order. A decoded chunk then serves
  every one of its rows, within a few batches. The trajectories of a chunk are
  independent draws of the generator, so mixing rows of a few random chunks is as good
  a batch as rows of the whole store. The order is a pure function of (seed, batch
  number): a resumed run reads exactly what the uninterrupted one would have, with no
  state to save, and every DDP rank knows the global batch.
* :class:`ChunkPrefetcher`, one background thread that decodes the chunks of the next
  batches while the current one trains; it keeps only the chunks still ahead, so the
  memory held is a few windows of chunks, not the store.
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

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
        self._epoch = -1
        self._order = np.empty(0, np.int64)

    def order(self, epoch: int) -> np.ndarray:
        """Every row of ``epoch`` in its reading order (kept for the current epoch)."""
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch])
            chunks = rng.permutation(-(-self.n // self.rows))
            rows = (chunks[:, None] * self.rows + np.arange(self.rows)).ravel()
            group = np.repeat(np.arange(len(chunks)) // self.window, self.rows)
            keep = rows < self.n  # the last chunk may be short
            rows, group = rows[keep], group[keep]
            self._order = rows[np.lexsort((rng.random(len(rows)), group))]
            self._epoch = epoch
        return self._order

    def __call__(self, k: int) -> np.ndarray:
        """The rows of global batch ``k``."""
        epoch, index = divmod(k, self.per_epoch)
        return self.order(epoch)[index * self.batch : (index + 1) * self.batch].copy()


class ChunkPrefetcher:
    """Rows of a :class:`ChunkedArray`, from chunks decoded ahead by one background thread.

    :meth:`read` returns the rows asked for, waiting only for chunks not decoded yet;
    :meth:`ahead` queues the chunks of batches to come. Decoded chunks are kept while a
    queued batch still needs them, and at most ``keep`` of the others (least recently
    used first out). Only the thread decodes: the array's scratch buffer is not shared.
    """

    def __init__(self, array: ChunkedArray, keep: int) -> None:
        self.array, self.keep = array, keep
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="hgn-prefetch")
        self.chunks: OrderedDict[int, Future[np.ndarray]] = OrderedDict()

    def _decode(self, chunk: int) -> np.ndarray:
        array = self.array
        first = chunk * array.rows
        count = min(array.rows, len(array) - first)
        out = empty((count, *array.shape[1:]), array.dtype)
        blob = array._fetch([chunk])[chunk]
        if count == array.rows:
            array._decode(blob, out)
        else:  # a short last chunk decodes to a full one
            full = empty((array.rows, *array.shape[1:]), array.dtype)
            array._decode(blob, full)
            out[:] = full[:count]
        return out

    def _submit(self, chunks: np.ndarray) -> None:
        for chunk in chunks.tolist():
            if chunk in self.chunks:
                self.chunks.move_to_end(chunk)
            else:
                self.chunks[chunk] = self.pool.submit(self._decode, chunk)

    def ahead(self, rows: list[np.ndarray]) -> None:
        """Queue the chunks of the batches ``rows`` (in the order they will be read) and
        let go of decoded chunks that no queued batch needs, beyond ``keep``."""
        needed: set[int] = set()
        for batch in rows:
            chunks = np.unique(batch // self.array.rows)
            self._submit(chunks)
            needed.update(chunks.tolist())
        spare = [c for c in self.chunks if c not in needed]
        for chunk in spare[: max(0, len(spare) - self.keep)]:
            del self.chunks[chunk]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (any order, repeats allowed) as one array."""
        out = empty((len(rows), *self.array.shape[1:]), self.array.dtype)
        chunk_of = rows // self.array.rows
        chunks = np.unique(chunk_of)
        self._submit(chunks)
        for chunk in chunks.tolist():
            where = np.flatnonzero(chunk_of == chunk)
            out[where] = self.chunks[chunk].result()[rows[where] - chunk * self.array.rows]
        return out

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
