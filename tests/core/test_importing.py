"""core.importing: user callables that fail in any way become config errors, never a dead process."""

from __future__ import annotations

import pytest

from edge_opt.core.importing import CallableImportError, import_callable


def test_a_module_that_calls_sys_exit_on_import_is_a_config_error(tmp_path):
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(3)\ndef f():\n    return 1\n")
    with pytest.raises(CallableImportError, match="exits_on_import.*does not import.*SystemExit"):
        import_callable("exits_on_import:f", "model_factory", search=[tmp_path])


def test_a_missing_attribute_is_named(tmp_path):
    (tmp_path / "has_no_g.py").write_text("def f():\n    return 1\n")
    with pytest.raises(CallableImportError, match="has no callable 'g'"):
        import_callable("has_no_g:g", "model_factory", search=[tmp_path])
