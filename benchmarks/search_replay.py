"""Measure a search space of more than 200 config points exhaustively once, keep it as a replay fixture, and
score NSGA-II and TPE searches against it (issue: multi-objective search).

    python benchmarks/search_replay.py measure   # the grid, once (a few minutes): tests/data/search_space.json
    python benchmarks/search_replay.py score     # hypervolume fractions of nsga2 / tpe, 3 seeds, 25 % budget

The fixture keeps what a search sees of each point (accuracy, device latency, run-time memory, feasibility and
the reason), read from the grid study's store. Hypervolume: accuracy (maximised) × device latency
(minimised) over the feasible points, reference point = (lowest accuracy, highest device latency) of all
feasible points of the exhaustive grid — see ``edge_opt.study.search.hypervolume_2d``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from edge_opt.config import config_from_dict  # noqa: E402
from edge_opt.pipeline import run_study  # noqa: E402
from edge_opt.study.search import judge_with, search_space  # noqa: E402
from search_fixture import FIXTURE, SPACE_CONFIG, replay_search, score  # noqa: E402


def measure() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config_from_dict({**SPACE_CONFIG, "output_dir": tmp})
        print(f"measuring {search_space(cfg).size} points …", flush=True)
        t0 = time.perf_counter()
        res = run_study(cfg, fresh=True)
        wall = time.perf_counter() - t0
        outcome = res.outcome
        judge = judge_with(cfg, outcome.baseline)
        points = []
        for a in outcome.assessed:
            j = judge(a.result)
            points.append(
                {
                    **a.point.__dict__,
                    "accuracy": j.accuracy,
                    "latency_ms": j.latency_ms,
                    "memory_mb": j.memory_mb,
                    "feasible": j.feasible,
                    "reason": j.reason,
                    "constraints": list(j.constraints),
                }
            )
        for r in outcome.skipped:
            points.append(
                {
                    **r.point.__dict__,
                    "accuracy": None,
                    "latency_ms": None,
                    "memory_mb": None,
                    "feasible": False,
                    "reason": r.skipped,
                    "constraints": [1.0, 1.0, 1.0],
                }
            )
    doc = {
        "config": SPACE_CONFIG,
        "measured_s": wall,
        "points": points,
        "note": "measured once by benchmarks/search_replay.py measure; replayed by tests/test_search.py",
    }
    FIXTURE.write_text(json.dumps(doc, indent=0) + "\n", encoding="utf-8")
    print(f"{len(points)} points in {wall:.0f} s -> {FIXTURE.relative_to(ROOT)}")


def main() -> int:
    if sys.argv[1:] == ["measure"]:
        measure()
        return 0
    for strategy in ("nsga2", "tpe"):
        for seed in (0, 1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                outcome = replay_search(Path(tmp), strategy, seed)
                s = score(outcome)
                print(
                    f"{strategy} seed {seed}: {s['distinct']} of {s['space']} points ({s['trials']} trials): "
                    f"hypervolume {s['fraction']:.3f} of the exhaustive frontier's; 90 % reached after "
                    f"{s['trials_to_90']} distinct points",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
