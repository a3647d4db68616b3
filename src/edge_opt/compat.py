"""The import paths of earlier releases, each the module that now holds its names.

Only this module knows them: importing ``edge_opt.metrics`` (say) gives the ``edge_opt.measure.metrics`` module
itself, so a name is defined once and a test's ``monkeypatch`` on an old path patches the real function.
``importlib``'s meta-path protocol does the aliasing; installed by the package root, it imports nothing heavy.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

__all__ = ["MOVED_MODULES", "install"]

MOVED_MODULES: dict[str, str] = {
    "edge_opt.metrics": "edge_opt.measure.metrics",
    "edge_opt.results": "edge_opt.measure.records",
    "edge_opt.energy": "edge_opt.measure.energy",
    "edge_opt.reporting": "edge_opt.report.files",
    "edge_opt.report_stage": "edge_opt.report.stage",
    "edge_opt.html_report": "edge_opt.report.html",
    "edge_opt.sensitivity_report": "edge_opt.report.sensitivity",
    "edge_opt.compare": "edge_opt.report.compare",
    "edge_opt.tracking": "edge_opt.report.tracking",
    "edge_opt.progress": "edge_opt.report.progress",
    "edge_opt.statistics": "edge_opt.bench.repeated",
    "edge_opt.benchmark": "edge_opt.bench.setup",
    "edge_opt.sweep": "edge_opt.study.sweep",
    "edge_opt.runner": "edge_opt.study.runner",
    "edge_opt.executors": "edge_opt.study.executors",
    "edge_opt.store": "edge_opt.study.store",
    "edge_opt.search": "edge_opt.study.search",
    "edge_opt.selection": "edge_opt.study.selection",
    "edge_opt.pareto": "edge_opt.study.pareto",
    "edge_opt.roofs": "edge_opt.hardware.roofs",
    "edge_opt.analysis": "edge_opt.hardware.analysis",
    "edge_opt.loadgen": "edge_opt.deploy.loadgen",
    "edge_opt.artifact": "edge_opt.deploy.artifact",
    "edge_opt.targets": "edge_opt.deploy.targets",
    "edge_opt.targets_import": "edge_opt.api",
    "edge_opt.training": "edge_opt.inputs.training",
    "edge_opt.models": "edge_opt.inputs.models",
    "edge_opt.data": "edge_opt.inputs.data",
    "edge_opt.readers": "edge_opt.inputs.readers",
    "edge_opt.sources": "edge_opt.inputs.sources",
    "edge_opt.agent": "edge_opt.device.agent",
    "edge_opt.remote": "edge_opt.device.remote",
    "edge_opt.vendor_logs": "edge_opt.device.vendor_logs",
    "edge_opt.registry": "edge_opt.core.registry",
    "edge_opt.atomic": "edge_opt.core.atomic",
    "edge_opt.env": "edge_opt.core.env",
    "edge_opt.importing": "edge_opt.core.importing",
    "edge_opt.generation": "edge_opt.core.generation",
    "edge_opt.runtime": "edge_opt.core.runtime",
    "edge_opt.timing": "edge_opt.core.stats",
    "edge_opt.variants.backends": "edge_opt.variants",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module that moved there (no second module object)."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its own name by ``create_module``."""


_FINDER = _MovedModules()


def install() -> None:
    """Put the finder on ``sys.meta_path`` (once)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
