"""Standard input (``--log -``): ``kubectl logs -f … | retrywatch run --log -``.

A reader thread reads chunks as they arrive (whatever is available, up to
``chunk_size``) and queues them; the consumer calls :meth:`StdinSource.poll` with a
timeout, so a quiet pipe never blocks the rest of the service. The queue is bounded:
when the consumer falls behind, the reader stops reading and the writer of the pipe
waits. End of input is reported by :attr:`StdinSource.eof` (after the last chunk was
polled); the consumer then flushes its pipeline.

The thread is a daemon: a read blocked on a silent pipe cannot be interrupted, so
:meth:`StdinSource.stop` only stops handing chunks on and does not wait for it.
"""

from __future__ import annotations

import queue
import sys
import threading
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["CHUNK_SIZE", "StdinSource", "StdinStats"]

CHUNK_SIZE = 256 * 1024
_QUEUE_CHUNKS = 64  # at most 16 MiB waiting for the consumer
_EOF = b""  # queued after the last chunk


@dataclass(slots=True)
class StdinStats:
    """Counters, written by the reader thread only."""

    chunks: int = 0
    bytes: int = 0
    errors: int = 0
    last_error: str | None = None


class StdinSource:
    """Reads a binary stream (standard input by default) in a thread; see the module doc."""

    name = "stdin"

    def __init__(self, stream: BinaryIO | None = None, chunk_size: int = CHUNK_SIZE) -> None:
        self._stream = stream if stream is not None else sys.stdin.buffer
        self.chunk_size = chunk_size
        self.stats = StdinStats()
        self._queue: queue.Queue[bytes] = queue.Queue(_QUEUE_CHUNKS)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._eof = False  # the end marker was polled

    @property
    def eof(self) -> bool:
        """True once the input ended (or failed) and every chunk before it was polled."""
        return self._eof

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("stdin already started")
        self._thread = threading.Thread(target=self._run, name="stdin", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (a read in progress finishes in the background)."""
        self._stopping.set()

    def poll(self, timeout: float | None = None) -> list[bytes]:
        """The chunks read so far, in order; waits up to ``timeout`` seconds (``None``:
        until something comes) when there is none. ``[]`` on timeout or at the end."""
        if self._eof:
            return []
        chunks: list[bytes] = []
        try:
            if timeout == 0 or self._stopping.is_set():
                chunk = self._queue.get_nowait()
            else:
                chunk = self._queue.get(timeout=timeout)
            while True:
                if not chunk:  # the end marker
                    self._eof = True
                    return chunks
                chunks.append(chunk)
                chunk = self._queue.get_nowait()
        except queue.Empty:
            return chunks

    def _read(self) -> bytes:
        read1 = getattr(self._stream, "read1", None)
        if read1 is not None:
            data: bytes = read1(self.chunk_size)  # what is there: a live pipe is not held
            return data
        return self._stream.read(self.chunk_size)

    def _run(self) -> None:
        stats = self.stats
        try:
            while not self._stopping.is_set():
                chunk = self._read()
                if not chunk:
                    break
                stats.chunks += 1
                stats.bytes += len(chunk)
                self._put(chunk)
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed
            stats.errors += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
        self._put(_EOF)

    def _put(self, chunk: bytes) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(chunk, timeout=0.2)
                return
            except queue.Full:
                continue
