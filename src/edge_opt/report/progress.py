"""Progress for ``edge-opt run``: a rich progress bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Reporter"]


class Reporter:
    """Receives pipeline events (``reporter(kind, **info)``) and shows them.

    Args:
        quiet: only errors and the final summary.
        verbose: also per-variant metrics.
        stream: where plain lines go (default stdout).
        rich_ui: force (True) or forbid (False) the rich display; default: only on a terminal.
    """

    def __init__(
        self, quiet: bool = False, verbose: bool = False, stream: TextIO | None = None, rich_ui: bool | None = None
    ) -> None:
        self.quiet, self.verbose = quiet, verbose
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.rich = (self.stream.isatty() if rich_ui is None else rich_ui) and not quiet
        self._progress: Any = None  # rich.progress.Progress once the bar runs
        self._task: Any = None
        self._variant_start: float | None = None
        self._durations: list[float] = []

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        msg = f"[{time.perf_counter() - self.start:7.1f}s] {text}"
        if self._progress is not None:
            self._progress.console.print(msg, highlight=False)
        else:
            print(msg, file=self.stream, flush=True)

    def __call__(self, kind: str, **info: Any) -> None:
        if kind == "stage":
            if info.get("name") != "variants":
                self._stop_bar()
            self._line(f"stage: {info.get('name')}" + (f" ({info['detail']})" if info.get("detail") else ""))
            if info.get("name") == "variants" and self.rich:
                self._start_bar()
        elif kind == "variant":
            p = info["point"]
            self._variant_start = time.perf_counter()
            label = f"variant {info['index']}/{info['total']}: {p.backend} {p.precision} pruning={p.pruning_level:g}"
            if self._progress is not None:
                self._progress.update(self._task, total=info["total"], description=label)
        elif kind == "trial":
            self._trial(info)
        elif kind == "variant_done":
            p, row = info["point"], info["row"]
            if self._variant_start is not None:
                self._durations.append(time.perf_counter() - self._variant_start)
            eta = ""
            if self._durations:
                left = info["total"] - info["index"]
                eta = f", ETA {left * sum(self._durations) / len(self._durations):.0f}s"
            status = (
                f"error: {row['error']}"
                if row.get("error")
                else (f"acc={row['accuracy']:.4f} latency={row['latency_ms']:.4f}ms memory={row['memory_mb']:.3f}MB")
            )
            if self._progress is not None:
                self._progress.update(self._task, completed=info["index"])
                if self.verbose:
                    self._line(
                        f"variant {info['index']}/{info['total']} {p.backend} {p.precision} "
                        f"p{p.pruning_level:g}: {status}"
                    )
            else:
                self._line(
                    f"variant {info['index']}/{info['total']} {p.backend} {p.precision} pruning={p.pruning_level:g}: "
                    f"{status}{eta}"
                )
        elif kind == "prune":
            if self.verbose or self._progress is None:
                self._line(f"pruning to level {info['level']:g} (+ fine-tuning)")
        elif kind == "log":
            self._line(str(info.get("message")))

    def _start_bar(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("variants", total=None)

    def _trial(self, info: dict[str, Any]) -> None:
        """One search trial: its point, values and feasibility, and the budget used."""
        r = info["record"]
        p = r.point
        budget = f"/{info['budget']}" if info.get("budget") else ""
        values = (
            f"acc={r.accuracy:.4f} device latency={r.latency_ms:.4f}ms"
            if r.accuracy == r.accuracy
            else (r.reason or "no numbers")
        )
        if self._progress is not None:
            self._progress.update(
                self._task,
                total=info.get("budget"),
                completed=info["distinct"],
                description=f"trial {r.number}: {p.backend} {p.precision} p{p.pruning_level:g}",
            )
        if self._progress is None or self.verbose:
            self._line(
                f"trial {r.number} ({info['distinct']}{budget} points) {p.backend} {p.precision} "
                f"pruning={p.pruning_level:g} [{r.how}]: {values}{'' if r.feasible else ' (infeasible)'}"
            )

    def _stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        self._stop_bar()
