"""``torch_threads``: the one place torch's thread count changes, put back on every exit."""

import pytest
import torch

from edge_opt.measure import torch_threads


def test_the_count_is_set_inside_and_restored_after():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_the_count_is_restored_after_an_exception():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), torch_threads(before + 2):
        assert torch.get_num_threads() == before + 2
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_nested_uses_restore_in_turn():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        with torch_threads(before + 2):
            assert torch.get_num_threads() == before + 2
        assert torch.get_num_threads() == before + 1
        with pytest.raises(ValueError), torch_threads(before + 3):
            raise ValueError
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
