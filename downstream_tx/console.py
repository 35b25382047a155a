"""What the command lines share: exit statuses, the bad-input error and progress bars on a
terminal (``downstream-admin`` and its lifecycle commands)."""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """Bad input detected by the command line itself (exit status 2)."""


class ProgressBar:
    """A progress bar (tqdm) on standard error for work that takes more than a moment, only when
    standard error is a terminal; silent otherwise (pipes, logs, cron)."""

    def __init__(self, label: str, stream=None, delay: float = 0.5, *, unit: str = "B"):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.delay = delay
        self.unit = unit
        self._bar = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            scaled = {"unit_scale": True, "unit_divisor": 1024} if self.unit == "B" else {}
            self._bar = tqdm(total=total or None, desc=self.label, unit=self.unit, file=self.stream, delay=self.delay,
                             leave=True, dynamic_ncols=True, **scaled)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class StageBars:
    """One progress bar per stage (``lifecycle.Progress``) on standard error when it is a terminal;
    nothing otherwise."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar: ProgressBar | None = None

    def stage(self, label: str, total: int, unit: str = "rows") -> Callable[[int], None]:
        self.close()
        bar = self.bar = ProgressBar(label, self.stream, unit=unit)
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            bar(done[0], total)

        return advance

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
