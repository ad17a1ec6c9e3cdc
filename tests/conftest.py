import os

import pytest
import torch

# Without a GPU the Triton kernels are tested through Triton's interpreter, which must be
# switched on before any kernel is defined (kernels are defined when their module is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

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
