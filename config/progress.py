"""Progress lines for long-running management commands: count, rate and ETA.

A command hands a :class:`ProgressPrinter` to its service as the ``progress``
callback ``(stage, done, total)``; the service stays free of output concerns.
"""

import time
from collections.abc import Callable


class ProgressPrinter:
    """Writes ``stage: done/total (pct)  rate/s  ETA``, throttled.

    At most one line every ``interval`` seconds per stage, but always the first
    report of a stage and its last (``done >= total``), which reads
    ``stage: N done in S (rate/s)``. A stage's clock starts at its first report.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._write = write
        self._interval = interval
        self._clock = clock
        self._stage: str | None = None
        self._stage_started = 0.0
        self._last_line = 0.0

    @classmethod
    def to(cls, stream, **options) -> "ProgressPrinter":
        """A printer writing to a command's ``self.stdout``, flushed line by line."""

        def write(text: str) -> None:
            stream.write(text)
            stream.flush()

        return cls(write, **options)

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self._clock()
        first = stage != self._stage
        if first:
            self._stage, self._stage_started = stage, now
        finished = done >= total
        if not (first or finished) and now - self._last_line < self._interval:
            return
        self._last_line = now
        self._write(progress_line(stage, done, total, now - self._stage_started))


def progress_line(stage: str, done: int, total: int, elapsed: float) -> str:
    """One progress line; the rate and ETA appear once they can be estimated."""
    rate = done / elapsed if elapsed > 0 and done else 0.0
    if not total:  # a step without a count
        return f"  {stage}: done in {elapsed:,.1f}s"
    if done >= total:
        line = f"  {stage}: {done:,} done in {elapsed:,.1f}s"
        return line + (f" ({rate:,.0f}/s)" if rate else "")
    line = f"  {stage}: {done:,}/{total:,} ({100 * done / total:.0f}%)"
    if rate:
        line += f"  {rate:,.0f}/s  ETA {(total - done) / rate:,.0f}s"
    return line
