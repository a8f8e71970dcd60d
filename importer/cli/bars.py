"""Progress bars for the CLI: the pipeline's `on_progress(stage, done, total)` drawn with tqdm on a stream.

Only `cli.py` uses this, and only when stderr is a terminal and --quiet was not given; the library reports
progress as plain calls and never imports tqdm (importer/progress.py).
"""

from __future__ import annotations

import os
from typing import Any, TextIO

from importer.progress import Stage

_LABELS = {
    Stage.READ: "reading",
    Stage.VALIDATE: "checking",
    Stage.PREPARE: "preparing",
    Stage.LOOKUP: "looking up",
    Stage.SEND: "sending",
    Stage.WRITE: "writing results",
}


class Bars:
    """The pipeline's progress as one tqdm bar per stage on stderr, with rows/s and the time left.

    A bar appears only once its stage has run for `delay` seconds, so a small schedule shows none and a large
    one shows where the time goes; a finished bar stays, with its rate.
    """

    def __init__(self, stream: TextIO, *, delay: float = 0.5) -> None:
        self._stream = stream
        self._delay = delay
        self._stage: Stage | None = None
        self._bar: Any = None

    def __call__(self, stage: Stage, done: int, total: int | None) -> None:
        if stage is not self._stage:
            self.close()
            self._stage = stage
            self._bar = self._open(stage, total)
        bar = self._bar
        if bar is None:
            return  # the stage's bar is finished
        if total != bar.total:
            bar.total = total
        bar.update(done - bar.n)
        if total is not None and done >= total:
            self.close()

    def _open(self, stage: Stage, total: int | None) -> Any:
        from tqdm import tqdm

        class Bar(tqdm):  # type: ignore[type-arg]
            monitor_interval = 0  # no monitor thread: updates come from the pipeline's own calls

        width = max(len(label) for label in _LABELS.values())
        columns, lines = _screen(self._stream)
        return Bar(total=total, desc=f"{_LABELS[stage]:<{width}}", unit=" rows", file=self._stream,
                   delay=self._delay, ncols=columns, nrows=lines, leave=True,
                   bar_format="{desc}  {percentage:3.0f}%|{bar}{r_bar}")  # fmt: skip

    def say(self, text: str) -> None:
        """A stage message, printed above the bar in progress rather than through it."""
        if self._bar is None:
            print(text, file=self._stream, flush=True)
        else:
            self._bar.write(text, file=self._stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _screen(stream: TextIO) -> tuple[int, int]:
    """The terminal's columns and lines; 80x24 where it does not say (a terminal that reports 0x0, as a new
    pseudo-terminal does, would make tqdm draw nothing)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return 80, 24
    return (min(size.columns, 120) if size.columns > 0 else 80), (size.lines if size.lines > 0 else 24)
