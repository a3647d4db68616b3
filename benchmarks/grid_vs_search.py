"""Grid vs NSGA-II search (25 distinct points) on the default model with all runtimes and precisions enabled:
wall time, rows and the recommendation of each.

    python benchmarks/grid_vs_search.py     # prints one JSON line per strategy (about 3 minutes)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from edge_opt.pipeline import load_study_config, run_study  # noqa: E402

EVERYTHING = {
    "backends": ["torch", "torch_channels_last", "onnxruntime", "openvino", "executorch"],
    "precisions": ["fp32", "fp16", "bf16", "int8", "int8_mixed"],
    "deployment": {"scenarios": ["single_stream"], "min_queries": 64, "min_duration_s": 0.5},
}
STRATEGIES = {"grid": {"strategy": "grid"}, "nsga2": {"strategy": "nsga2", "n_trials": 25, "seed": 0}}


def main() -> int:
    for name, search in STRATEGIES.items():
        with tempfile.TemporaryDirectory(prefix=f"edge_opt_{name}_") as out:
            cfg = load_study_config(
                ROOT / "configs" / "default.yaml", {"output_dir": out, **EVERYTHING, "search": search}
            )
            t0 = time.perf_counter()
            res = run_study(cfg, fresh=True)
            wall = time.perf_counter() - t0
        rec = res.summary.get("recommended") or {}
        print(
            name,
            json.dumps(
                {
                    "wall_s": wall,
                    "variants_s": res.timings.get("variants"),
                    "rows": len(res.sweep),
                    "errors": int(res.sweep["error"].notna().sum()),
                    "search": res.summary.get("search"),
                    "recommended": {
                        k: rec.get(k) for k in ("backend", "precision", "pruning_level", "latency_ms", "accuracy")
                    },
                },
                default=str,
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
