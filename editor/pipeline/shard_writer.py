"""Fill an export's shard files with two workers: kernel copies of unchanged bytes, and edited tensors.

Every output file's header is written first (offsets follow from shapes and dtypes), so each tensor can be
written at its place as soon as it is computed, block of rows by block of rows, and hashed as it is written;
nothing holds a shard. Two threads share the work: one prefers the edited tensors (decode, maths and encode
are numpy kernels, which release the GIL), the other the copies (``copy_file_range``, in the kernel), and
each takes the other's work when its own runs out. A byte budget keeps two large edited tensors from being
computed at once, so peak memory is about one tensor in float32 (the largest a projection must see whole) or
a few row blocks, whatever the size of the model or its shards.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from editor.core.bake import BakeProgram
from editor.io.checkpoint import Checkpoint
from editor.io.progress import byte_progress
from editor.io.tensor_file import STORAGE, Slot, array_bytes, copy_range, encode_into, nbytes, write_at

# Copies are cut into pieces of this size, so progress moves and both workers can share the last copies.
COPY_PIECE = 256 << 20
# Edited tensors computed at once may hold this many bytes together (a larger one runs alone).
MEMORY_BUDGET = 256 << 20


@dataclass(frozen=True)
class Copy:
    """``length`` unchanged bytes from ``src`` at ``start`` to ``dst`` at ``offset``."""

    src: Path
    start: int
    length: int
    dst: Path
    offset: int


@dataclass(frozen=True)
class Compute:
    """An edited or added tensor, computed by the bake program and written into ``slot`` of ``dst``."""

    dst: Path
    slot: Slot
    hash_source: bool  # also hash the source tensor's bytes as they are read (a changed tensor)
    memory: int


@dataclass
class Hashes:
    before: str | None
    after: str


def split_copy(job: Copy, piece: int = COPY_PIECE) -> list[Copy]:
    return [
        Copy(job.src, job.start + done, min(piece, job.length - done), job.dst, job.offset + done)
        for done in range(0, job.length, piece)
    ]


def compute_tensor(
    program: BakeProgram, ckpt: Checkpoint, job: Compute, advance: Callable[[int], None] = lambda _n: None
) -> Hashes:
    """Compute one tensor block by block; each block is hashed and written at its place as soon as it exists."""
    name, slot = job.slot.name, job.slot
    before = hashlib.sha256() if job.hash_source else None
    after = hashlib.sha256()
    sources: dict[str, int] = {}
    reads: dict[str, bytearray] = {}  # one read buffer per source tensor, reused block after block

    def read_rows(source: str, start: int, stop: int) -> np.ndarray:
        meta = ckpt.metas[source]
        row = nbytes(meta.shape[1:], meta.dtype)
        if source not in sources:
            sources[source] = os.open(ckpt.file_of(source), os.O_RDONLY)
        size = (stop - start) * row
        if len(reads.get(source, b"")) < size:
            reads[source] = bytearray(size)
        view = memoryview(reads[source])[:size]
        if os.preadv(sources[source], [view], meta.start + start * row) != size:
            raise OSError(f"{ckpt.file_of(source)}: short read in {source}")
        if before is not None and source == name:
            before.update(view)
        return np.frombuffer(view, dtype=STORAGE[meta.dtype]).reshape(stop - start, *meta.shape[1:])

    row_bytes = nbytes(slot.shape[1:], slot.dtype)
    encoded = np.empty(0, dtype=STORAGE[slot.dtype])
    fd = os.open(job.dst, os.O_WRONLY)
    try:
        for first, values in program.blocks(name, read_rows):
            if encoded.size < values.size:
                encoded = np.empty(values.size, dtype=STORAGE[slot.dtype])
            data = array_bytes(
                encode_into(as_float32(values), slot.dtype, encoded[: values.size].reshape(values.shape))
            )
            after.update(data)
            write_at(fd, data, slot.offset + first * row_bytes)
            advance(len(data))
    finally:
        os.close(fd)
        for source_fd in sources.values():
            os.close(source_fd)
    return Hashes(before.hexdigest() if before else None, after.hexdigest())


def as_float32(values: np.ndarray) -> np.ndarray:
    """``values`` as contiguous float32, copied only if they are not: exports round from float32 (float64 cast
    straight to bf16 can round differently), and encode_into leaves its input as it was, so no copy to spoil."""
    return np.ascontiguousarray(values, dtype=np.float32)


def copy_bytes(job: Copy) -> None:
    src = os.open(job.src, os.O_RDONLY)
    try:
        dst = os.open(job.dst, os.O_WRONLY)
        try:
            copy_range(src, job.start, job.length, dst, job.offset)
        finally:
            os.close(dst)
    finally:
        os.close(src)


class _Queue:
    """The two workers' shared work: copies in order, edited tensors largest first, under a memory budget."""

    def __init__(self, copies: list[Copy], computes: list[Compute], budget: int):
        self.copies = deque(piece for job in copies for piece in split_copy(job))
        self.computes = deque(sorted(computes, key=lambda job: job.slot.nbytes, reverse=True))
        self.free = max([budget, *(job.memory for job in computes)])
        self.cond = threading.Condition()
        self.error: BaseException | None = None

    def take(self, prefers_compute: bool) -> Copy | Compute | None:
        with self.cond:
            while self.error is None:
                if prefers_compute and self.computes and self.computes[0].memory <= self.free:
                    return self._reserve(self.computes.popleft())
                if self.copies:
                    return self.copies.popleft()
                if not self.computes:
                    return None
                end = 0 if prefers_compute else -1  # the copy worker helps with the smallest tensors
                if self.computes[end].memory <= self.free:
                    job = self.computes.popleft() if end == 0 else self.computes.pop()
                    return self._reserve(job)
                self.cond.wait()
            return None

    def _reserve(self, job: Compute) -> Compute:
        self.free -= job.memory
        return job

    def release(self, job: Compute) -> None:
        with self.cond:
            self.free += job.memory
            self.cond.notify_all()

    def fail(self, error: BaseException) -> None:
        with self.cond:
            if self.error is None:
                self.error = error
            self.cond.notify_all()


def fill_files(
    program: BakeProgram,
    ckpt: Checkpoint,
    copies: list[Copy],
    computes: list[Compute],
    *,
    show_progress: bool = True,
    budget: int = MEMORY_BUDGET,
) -> dict[str, Hashes]:
    """Run every job on two threads; the files must exist (headers written). Returns each tensor's hashes."""
    queue = _Queue(copies, computes, budget)
    hashes: dict[str, Hashes] = {}
    total = sum(job.length for job in copies) + sum(job.slot.nbytes for job in computes)
    lock = threading.Lock()
    with byte_progress(total, show=show_progress, desc="export") as bar:

        def advance(count: int) -> None:
            with lock:
                bar.update(count)

        def work(prefers_compute: bool) -> None:
            try:
                while (job := queue.take(prefers_compute)) is not None:
                    if isinstance(job, Copy):
                        copy_bytes(job)
                        advance(job.length)
                        continue
                    try:
                        hashes[job.slot.name] = compute_tensor(program, ckpt, job, advance)
                    finally:
                        queue.release(job)
            except BaseException as err:  # handed to the main thread, which raises it
                queue.fail(err)

        threads = [threading.Thread(target=work, args=(first,), daemon=True) for first in (True, False)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except BaseException as err:  # Ctrl-C while waiting: stop the workers after their current block
            queue.fail(err)
            raise
        if queue.error is not None:
            raise queue.error
    return hashes
