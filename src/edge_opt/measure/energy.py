"""Energy: Intel RAPL package counters when readable, else a labelled power × time proxy.

RAPL counters (``/sys/class/powercap/intel-rapl:N/energy_uj``) are package-wide:
they include everything else the package did during the window. They wrap at
``max_energy_range_uj``; deltas handle one wrap. Where nothing is readable the
estimate is ``power_watts × busy time`` with source ``proxy``; where even that is
impossible the value is NaN, never 0.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_POWERCAP_ROOT", "EnergyEstimate", "RaplReader", "measure_energy", "proxy_energy"]

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class EnergyEstimate:
    """Joules and where they came from (``rapl`` package-wide, or ``proxy``)."""

    joules: float
    source: str
    detail: str = ""


class RaplReader:
    """Reads package-level RAPL energy counters under ``root``.

    Args:
        root: the powercap folder (a parameter so tests can use a fake tree).
    """

    def __init__(self, root: str | Path = DEFAULT_POWERCAP_ROOT) -> None:
        self.root = Path(root)
        self.zones: list[Path] = []
        if self.root.is_dir():
            for z in sorted(self.root.iterdir()):
                if _PACKAGE_ZONE.match(z.name) and (z / "energy_uj").exists():
                    try:
                        int((z / "energy_uj").read_text())
                        self.zones.append(z)
                    except (OSError, ValueError):
                        continue

    @property
    def available(self) -> bool:
        """True when at least one package counter is readable."""
        return bool(self.zones)

    def read_uj(self) -> list[int]:
        """Current counter value of every package zone, in µJ."""
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def _max_range(self, zone: Path) -> int | None:
        try:
            return int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            return None

    def delta_j(self, start: list[int], end: list[int]) -> float:
        """Joules between two readings, summed over packages; one wrap-around per zone handled."""
        total = 0
        for zone, a, b in zip(self.zones, start, end):
            if b >= a:
                total += b - a
            else:
                rng = self._max_range(zone)
                if rng is None:
                    return math.nan
                total += rng - a + b
        return total / 1e6


def proxy_energy(power_watts: float, busy_seconds: float) -> EnergyEstimate:
    """``power_watts × busy_seconds``, labelled ``proxy``; NaN for non-finite inputs."""
    if not (math.isfinite(power_watts) and math.isfinite(busy_seconds)):
        return EnergyEstimate(math.nan, "proxy", "power or time not finite")
    return EnergyEstimate(power_watts * busy_seconds, "proxy", f"power_watts={power_watts} × busy time")


def measure_energy(
    fn: Callable[[], int], *, power_watts: float, reader: RaplReader | None = None, min_window_s: float = 0.05
) -> tuple[EnergyEstimate, float, int]:
    """Run ``fn`` (which returns how many operations it ran) and attribute energy per operation.

    Uses RAPL when ``reader`` is available and the window lasts at least ``min_window_s``
    (the counters update about every millisecond), else the proxy.

    Returns:
        (energy per operation, window seconds, operations)
    """
    reader = reader if reader is not None else RaplReader()
    start_uj = reader.read_uj() if reader.available else None
    t0 = time.perf_counter()
    ops = fn()
    elapsed = time.perf_counter() - t0
    ops = max(int(ops), 1)
    if start_uj is not None and elapsed >= min_window_s:
        joules = reader.delta_j(start_uj, reader.read_uj())
        if math.isfinite(joules):
            return EnergyEstimate(joules / ops, "rapl", "package-wide RAPL counters"), elapsed, ops
    return proxy_energy(power_watts, elapsed / ops), elapsed, ops
