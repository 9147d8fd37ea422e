"""Training progress for people: a bar on a terminal, a log line every few seconds otherwise (batch jobs)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(
        self,
        total: int,
        initial: int,
        interval_s: float = 10.0,
        stream=sys.stderr,
        stage: str = "train",
        unit: str = "env_steps",
        metric: str = "recent return",
    ):
        self.total, self.interval_s, self.stream = total, interval_s, stream
        self.stage, self.unit, self.metric = stage, unit, metric
        self._start, self._start_steps, self._last_log = time.monotonic(), initial, 0.0
        self._bar = (
            tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True, file=stream)
            if stream.isatty()
            else None
        )

    def update(self, env_steps: int, recent_return: float) -> None:
        elapsed = time.monotonic() - self._start
        rate = (env_steps - self._start_steps) / max(elapsed, 1e-9)
        if self._bar is not None:
            self._bar.update(env_steps - self._bar.n)
            self._bar.set_postfix({self.metric: f"{recent_return:.3g}"})
        elif elapsed - self._last_log >= self.interval_s or env_steps >= self.total:
            self._last_log = elapsed
            eta = (self.total - env_steps) / rate if rate > 0 else float("inf")
            print(
                f"{self.stage}: {self.unit} {env_steps:,}/{self.total:,} ({100 * env_steps / self.total:.0f}%) | "
                f"{rate:,.2f} {self.unit}/s | {self.metric} {recent_return:.3g} | ETA {eta:.0f}s",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
