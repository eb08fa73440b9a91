"""Progress lines on stderr for long loops (training steps, segmented slices)."""

import math
import sys
import time


class Progress:
    """A one-line progress report on stderr: position, metrics, rate and ETA."""

    def __init__(self, start, total, enabled=True, stream=None, noun="step", unit="img/s"):
        self.start, self.total, self.enabled, self.noun, self.unit = start, total, enabled, noun, unit
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.perf_counter()
        self.last_line = 0.0

    def update(self, step, metrics, images):
        """Report ``step`` and its ``metrics``; ``images`` = items done since ``start``."""
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = max(now - self.t0, 1e-9)
        rate = images / elapsed
        remaining = (self.total - step) * elapsed / max(step - self.start, 1)
        text = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        line = f"{self.noun} {step}/{self.total}  {text}  {rate:.0f} {self.unit}  eta {_duration(remaining)}"
        if self.tty:
            self.stream.write("\r" + line[:200].ljust(100))
        elif now - self.last_line >= 10 or step == self.total:
            self.stream.write(line + "\n")
            self.last_line = now
        if step == self.total and self.tty:
            self.stream.write("\n")
        self.stream.flush()


def _duration(seconds):
    seconds = int(math.ceil(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"
