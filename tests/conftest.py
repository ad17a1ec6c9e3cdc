import os

import pytest
import torch

# Two cores: keep tests from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _basis_cache_in_tmp(tmp_path_factory):
    """Keep the on-disk basis cache (contractions.basis) out of the user's home directory."""
    old = os.environ.get("EVERYGRAPH_CACHE_DIR")
    os.environ["EVERYGRAPH_CACHE_DIR"] = str(tmp_path_factory.mktemp("everygraph_cache"))
    yield
    if old is None:
        del os.environ["EVERYGRAPH_CACHE_DIR"]
    else:
        os.environ["EVERYGRAPH_CACHE_DIR"] = old
