"""One live session: sources merged into one stream and fed to sinks, under one stop, signal and flush rule.

``live``, ``record``, ``demo``, ``lab --record`` and the VFIO runner's BPF recorder each
run a ``Session``; the TUI drives one from its worker thread (a session is itself a
``Source``: entering attaches and starts the sinks, ``batches`` is the loop, leaving
detaches and flushes).

The loop feeds every batch to every sink, calls ``tick`` on each heartbeat (~``poll_s``)
and ends when: the stop event is set (a signal, the caller, the TUI quitting), the
duration is over, the target process has exited, ``done()`` has held for ``drain_s``
(the lab: QEMU has exited, so the logs are complete), or every source has ended.
Sources then yield what they still hold; the sources are detached, then the sinks are
closed (the flush: the recording written, the summary printed) with the health taken
just before detaching.

Signals (``run()`` on the main thread): the first SIGINT/SIGTERM says "Detaching..." on
stderr and stops the loop (``Signals.DETACH``; any further signal is ignored, also after
``run()`` returns: the process is on its way out), or raises KeyboardInterrupt so the
caller unwinds as on Ctrl-C once the flush is over (``Signals.RAISE``, the lab: QEMU must
be cleaned up; further signals are ignored until then).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import pandas as pd

from profiler import events as ev
from profiler.sources.base import Source
from profiler.sources.procfd import pid_alive
from profiler.stream import MergedSource

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What a session feeds. Every method is called on the session's thread."""

    def start(self, health: Mapping[str, Any]) -> None:
        """The sources are attached (``health``: what each one reports)."""

    def feed(self, batch: pd.DataFrame) -> None:
        """A non-empty batch of events in the ``profiler.events`` schema."""

    def tick(self, now: float) -> None:
        """A heartbeat (``now``: time.monotonic()), after each batch and when idle."""

    def close(self, health: Mapping[str, Any]) -> None:
        """The sources are detached: flush (health as it was just before detaching)."""


class BaseSink:
    """A sink that does nothing: subclass and override what you need."""

    def start(self, health: Mapping[str, Any]) -> None:
        pass

    def feed(self, batch: pd.DataFrame) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def close(self, health: Mapping[str, Any]) -> None:
        pass


class Signals(enum.Enum):
    """What the first SIGINT/SIGTERM does to a session run on the main thread."""

    DETACH = "detach"  # "Detaching...", then stop and flush
    RAISE = "raise"  # KeyboardInterrupt (after the flush, the caller unwinds)
    NONE = "none"  # leave the process's handlers alone


@dataclass(frozen=True, slots=True)
class Ended:
    """Why and how a session ended."""

    reason: str  # stopped | interrupted | duration | target-exited | done | sources-ended
    signals: int = 0  # SIGINT/SIGTERM received
    health: dict[str, Any] = field(default_factory=dict)


class Session(Source):
    """Runs ``sources`` into ``sinks`` until one of the ends in the module docstring."""

    name = "session"

    def __init__(
        self,
        sources: Sequence[Source],
        sinks: Sequence[Sink] = (),
        *,
        duration_s: float | None = None,
        pid: int | None = None,
        done: Callable[[], bool] | None = None,
        drain_s: float = 0.0,
        poll_s: float = 0.1,
        signals: Signals = Signals.DETACH,
        stop: threading.Event | None = None,
        notify: Callable[[str], None] | None = None,
        err: IO[str] | None = None,
    ):
        self.merged = MergedSource(list(sources), poll_s=poll_s)
        self.sinks: list[Sink] = list(sinks)
        self.duration_s = duration_s
        self.pid = pid
        self.done = done
        self.drain_s = drain_s
        self.signals = signals
        self.stop = stop or threading.Event()
        self._err = err
        self.notify = notify or self._say
        self.reason: str | None = None
        self.received = 0  # signals
        self.ended: Ended | None = None
        self._owner = os.getpid()
        self._started: list[Sink] = []
        self._flushing = False
        self._raise_after = False  # Signals.RAISE: a signal that came during the flush

    def _say(self, msg: str) -> None:
        print(f"migprof: {msg}", file=self._err or sys.stderr, flush=True)

    def add_sink(self, sink: Sink) -> None:
        """Add a sink before the session starts."""
        self.sinks.append(sink)

    # ---------------------------------------------------------------- the Source face
    def __enter__(self) -> Session:
        self.merged.__enter__()
        try:
            health = self.merged.health()
            for s in self.sinks:
                s.start(health)
                self._started.append(s)
        except BaseException:
            self.merged.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Detach the sources, then flush the sinks (each one, whatever the others do)."""
        self._flushing = True
        try:
            health = self.merged.health()
            self.merged.close()
            self.reason = self.reason or ("interrupted" if self.received else "stopped")
            self.ended = Ended(self.reason, self.received, health)
            sinks, self._started = self._started, []
            for s in sinks:
                try:
                    s.close(health)
                except Exception as e:  # one sink failing to flush must not lose the others'
                    log.warning("closing %s: %s", type(s).__name__, e)
        finally:
            self._flushing = False

    def health(self) -> dict[str, Any]:
        return self.merged.health()

    def batches(self, stop: threading.Event | None = None) -> Iterator[pd.DataFrame]:
        """The loop: feeds the sinks and yields every batch (heartbeats too)."""
        outer = stop if stop is not None and stop is not self.stop else None
        deadline = time.monotonic() + self.duration_s if self.duration_s else None
        done_at: float | None = None
        it = self.merged.batches(self.stop)
        try:
            for batch in it:
                self._feed(batch)
                yield batch
                now = time.monotonic()
                if self.stop.is_set():
                    continue
                if outer is not None and outer.is_set():
                    self._end("stopped")
                elif deadline is not None and now >= deadline:
                    self._end("duration")
                elif self.pid is not None and not pid_alive(self.pid):
                    self.notify(f"QEMU pid {self.pid} exited")
                    self._end("target-exited")
                elif self.done is not None and self.done():
                    done_at = done_at or now
                    if now - done_at >= self.drain_s:
                        self._end("done")
        except GeneratorExit:
            # the consumer stopped reading (the TUI quit): what the sources still hold
            # goes to the sinks all the same
            self._end("stopped")
            for batch in it:
                self._feed(batch)
            raise
        self.reason = self.reason or "sources-ended"

    def _feed(self, batch: pd.DataFrame) -> None:
        if batch is not None and len(batch):
            for s in self._started:
                s.feed(batch)
        now = time.monotonic()
        for s in self._started:
            s.tick(now)

    def _end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop.set()

    # ---------------------------------------------------------------- running it here
    def run(self) -> Ended:
        """Attach, loop, detach and flush on this thread; returns how it ended."""
        with self._signal_handlers(), self:
            for _ in self.batches():
                pass
        if self._raise_after:
            raise KeyboardInterrupt
        assert self.ended is not None
        return self.ended

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if self.signals is Signals.NONE or threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                # detached on a signal, the process is on its way out (the summary, the
                # exit): further signals stay ignored, or they would cut that short
                signal.signal(s, signal.SIG_IGN if self.received and self.signals is Signals.DETACH
                              else h)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if os.getpid() != self._owner:
            # a forked helper (pyroute2) inherited the handler: it must not unwind our stack
            os._exit(128 + signum)
        self.received += 1
        if self.received > 1:
            return  # the flush goes on
        self._end("interrupted")
        if self.signals is Signals.RAISE:
            if self._flushing:
                self._raise_after = True  # unwind once the flush is over
                return
            raise KeyboardInterrupt
        _write_now(self._err or sys.stderr, "\nDetaching...\n")


def _write_now(out: IO[str], text: str) -> None:
    """Write from a signal handler: straight to the fd, never into a buffer that the
    interrupted code may be in the middle of writing."""
    try:
        os.write(out.fileno(), text.encode())
    except (OSError, ValueError, AttributeError, RuntimeError):
        with contextlib.suppress(Exception):
            out.write(text)


# ---------------------------------------------------------------- common sinks


class CallbackSink(BaseSink):
    """A sink made of callables (any may be None)."""

    def __init__(self, *, on_start: Callable[[Mapping[str, Any]], None] | None = None,
                 on_batch: Callable[[pd.DataFrame], None] | None = None,
                 on_tick: Callable[[float], None] | None = None,
                 on_close: Callable[[Mapping[str, Any]], None] | None = None):
        self.on_start, self.on_batch, self.on_tick, self.on_close = on_start, on_batch, on_tick, on_close

    def start(self, health: Mapping[str, Any]) -> None:
        if self.on_start is not None:
            self.on_start(health)

    def feed(self, batch: pd.DataFrame) -> None:
        if self.on_batch is not None:
            self.on_batch(batch)

    def tick(self, now: float) -> None:
        if self.on_tick is not None:
            self.on_tick(now)

    def close(self, health: Mapping[str, Any]) -> None:
        if self.on_close is not None:
            self.on_close(health)


class FrameSink(BaseSink):
    """Keeps every batch (for a summary at the end, or a file written at once)."""

    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []
        self.health: dict[str, Any] = {}

    def feed(self, batch: pd.DataFrame) -> None:
        self.frames.append(batch)

    def close(self, health: Mapping[str, Any]) -> None:
        self.health = dict(health)

    def frame(self) -> pd.DataFrame:
        return ev.concat(self.frames) if self.frames else ev.empty_frame()


class RecordingSink(BaseSink):
    """Writes every batch to a ``profiler.store.RecordingWriter``.

    ``meta_at_start`` / ``meta_at_close`` turn the health into metadata to add then;
    ``close_writer=False`` leaves closing to the caller (the lab adds run.json first).
    """

    def __init__(
        self,
        writer: Any,
        *,
        meta_at_start: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
        meta_at_close: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
        close_writer: bool = True,
    ):
        self.writer = writer
        self.meta_at_start = meta_at_start
        self.meta_at_close = meta_at_close
        self.close_writer = close_writer

    def start(self, health: Mapping[str, Any]) -> None:
        if self.meta_at_start is not None:
            self.writer.update_meta(**self.meta_at_start(health))

    def feed(self, batch: pd.DataFrame) -> None:
        self.writer.write(batch)

    def close(self, health: Mapping[str, Any]) -> None:
        if self.meta_at_close is not None:
            self.writer.update_meta(**self.meta_at_close(health))
        if self.close_writer:
            self.writer.close()


class JsonLinesSink(BaseSink):
    """Appends every batch to a JSON-lines row file (``profiler.sources.jsonl``) as it comes."""

    def __init__(self, path: str | os.PathLike[str]):
        from profiler.sources.jsonl import write_frame

        self._write = write_frame
        self.path = path
        self.rows = 0
        self._fh: IO[str] | None = None

    def start(self, health: Mapping[str, Any]) -> None:
        self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def feed(self, batch: pd.DataFrame) -> None:
        if self._fh is not None:
            self.rows += self._write(batch, self._fh)

    def close(self, health: Mapping[str, Any]) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def jsonable(x: Any) -> Any:
    """Health and metadata as plain JSON values (anything else as its text)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, str | int | float | bool) or x is None:
        return x
    return str(x)
