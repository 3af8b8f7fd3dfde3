"""Engine hooks for tests: record every progress report and cancel on cue."""

from __future__ import annotations

from castframe.engines.base import JobCancelled


class Recorder:
    """Records ``progress`` values; with ``cancel_after=n`` the (n+1)-th check cancels the job."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.values: list[int] = []
        self.checks = 0
        self.cancel_after = cancel_after

    def progress(self, percent: int) -> None:
        self.values.append(percent)

    def check_cancelled(self) -> None:
        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise JobCancelled()
