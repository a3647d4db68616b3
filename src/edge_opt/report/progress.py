"""Progress for ``edge-opt run``: a rich progress bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["Reporter"]


def _row_values(row: dict[str, Any]) -> str:
    """A finished variant's numbers: the study's metric under its display name (``ROC AUC=0.9982``, ``MAE=0.0123``)
    when the study is scored by another metric than top1 (the row has ``metric_name``), else ``acc=``."""
    name = row.get("metric_name")
    score = f"{name}={row['metric']:.4f}" if name else f"acc={row['accuracy']:.4f}"
    return f"{score} latency={row['latency_ms']:.4f}ms memory={row['memory_mb']:.3f}MB"


class Reporter:
    """Receives pipeline events (``reporter(kind, **info)``) and shows them.

    A ``metric`` event (``display_name``, ``higher_is_better``, ``baseline``: a study scored by another metric than
    top1) names the metric the variant and trial lines then show in place of ``acc=``.

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
        self._metric: tuple[str, bool] | None = None  # (display name, higher is better) of a study not scored by top1

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
            self._variant_done(info)
        elif kind == "prune":
            if self.verbose or self._progress is None:
                self._line(f"pruning to level {info['level']:g} (+ fine-tuning)")
        elif kind == "log":
            self._line(str(info.get("message")))
        elif kind == "metric":
            self._metric = (str(info["display_name"]), bool(info["higher_is_better"]))
            base = info.get("baseline")
            self._line(
                f"metric: {self._metric[0]} ({'higher' if self._metric[1] else 'lower'} is better)"
                + (f", fp32 baseline {base:.4f}" if isinstance(base, float) else "")
            )

    def _variant_done(self, info: dict[str, Any]) -> None:
        """A finished variant: its numbers (or error) and the ETA."""
        p, row = info["point"], info["row"]
        if self._variant_start is not None:
            self._durations.append(time.perf_counter() - self._variant_start)
        eta = ""
        if self._durations:
            left = info["total"] - info["index"]
            eta = f", ETA {left * sum(self._durations) / len(self._durations):.0f}s"
        status = f"error: {row['error']}" if row.get("error") else _row_values(row)
        if self._progress is not None:
            self._progress.update(self._task, completed=info["index"])
            if self.verbose:
                self._line(
                    f"variant {info['index']}/{info['total']} {p.backend} {p.precision} p{p.pruning_level:g}: {status}"
                )
        else:
            self._line(
                f"variant {info['index']}/{info['total']} {p.backend} {p.precision} pruning={p.pruning_level:g}: "
                f"{status}{eta}"
            )

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
        if r.accuracy != r.accuracy:
            values = r.reason or "no numbers"
        elif self._metric is not None:  # the record's score is the metric signed so that higher is better
            name, higher = self._metric
            values = f"{name}={r.accuracy if higher else -r.accuracy:.4f} device latency={r.latency_ms:.4f}ms"
        else:
            values = f"acc={r.accuracy:.4f} device latency={r.latency_ms:.4f}ms"
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
