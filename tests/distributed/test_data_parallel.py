"""Data-parallel training with two gloo processes equals single-process training on the
concatenated batch, for every layer of ``everygraph.nn``, including a rank without edges."""

import pytest
import torch

import everygraph.nn
from ddp_cases import CASES, NOT_LAYERS, single_process


def test_every_exported_layer_has_a_case():
    missing = set(everygraph.nn.__all__) - set(CASES) - set(NOT_LAYERS)
    assert not missing, f"add a data-parallel case for {sorted(missing)} to tests/distributed/ddp_cases.py"


@pytest.fixture
def ddp_results(rank_results):
    return [r["data_parallel"] for r in rank_results(2)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_ddp_equals_single_process(ddp_results, name):
    expected_grads, expected_params = single_process(name)
    for split_id, split in enumerate(CASES[name].splits):
        for rank, result in enumerate(ddp_results):
            grads, params = result[name, split_id]
            where = f"{name}, split {split}, rank {rank}"
            assert len(grads) == len(expected_grads), where
            for got, want in zip(grads, expected_grads):
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=lambda m: f"{where} grad: {m}")
            for got, want in zip(params, expected_params):
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=lambda m: f"{where} param: {m}")
