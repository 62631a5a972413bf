"""What people see while a run trains: a live progress line on a terminal, plain log
lines (for kubectl logs and CI) otherwise."""

from __future__ import annotations

import sys
from typing import TextIO


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def progress_line(*, step: int, max_steps: int, loss: float, eta_seconds: float | None,
                  audio_per_second: float | None, width: int = 24) -> str:
    """e.g. `[#########...............]  120/300 loss 1.234 ETA 01:05 37.2 audio-s/s`."""
    done = min(1.0, step / max_steps) if max_steps else 0.0
    filled = int(done * width)
    bar = "#" * filled + "." * (width - filled)
    speed = f" {audio_per_second:.1f} audio-s/s" if audio_per_second else ""
    return f"[{bar}] {step:>{len(str(max_steps))}}/{max_steps} loss {loss:.3f} ETA {format_eta(eta_seconds)}{speed}"


class Console:
    """Writes log lines; on a TTY also keeps one progress line redrawn in place. A console
    that went away (closed stderr, a broken pipe) is dropped, not fatal: the run goes on
    and train_log.txt keeps every line."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream: TextIO | None = stream if stream is not None else sys.stderr
        try:
            self.live = bool(self.stream and self.stream.isatty()) if live is None else live
        except (OSError, ValueError):
            self.stream, self.live = None, False
        self._bar_shown = False

    def line(self, text: str) -> None:
        if self._bar_shown:
            self._emit("\r\033[K")
            self._bar_shown = False
        self._emit(text + "\n")

    def progress(self, text: str) -> None:
        if not self.live:
            return
        self._bar_shown = self._emit("\r\033[K" + text)

    def close(self) -> None:
        if self._bar_shown:
            self._emit("\n")
            self._bar_shown = False

    def _emit(self, text: str) -> bool:
        if self.stream is None:
            return False
        try:
            self.stream.write(text)
            self.stream.flush()
            return True
        except (OSError, ValueError):
            self.stream, self.live = None, False
            return False
