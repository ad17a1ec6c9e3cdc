"""Whether Triton kernels can run here, decided once and in one place.

Triton compiles ``@triton.jit`` kernels for CUDA GPUs. With ``TRITON_INTERPRET=1`` its
interpreter runs the same kernels on CPU tensors (slowly, with numpy): that is how the
kernels are tested on machines without a GPU.
"""

from __future__ import annotations

import importlib.util
import os

import torch


def triton_installed() -> bool:
    """``triton`` can be imported (the optional extra ``everygraph[gpu]``)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except ValueError:  # sys.modules["triton"] is None: imports of it are blocked
        return False


def interpreting() -> bool:
    """Triton's interpreter is switched on (``TRITON_INTERPRET=1``): kernels run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_runs_on(device: torch.device) -> bool:
    """Triton kernels can run on tensors of ``device``: a CUDA device with triton installed,
    or any device under the interpreter."""
    if not triton_installed():
        return False
    return device.type == "cuda" or interpreting()


def require_triton(device: torch.device) -> None:
    """Raise a clear error when ``execution="triton"`` cannot run on ``device``."""
    if not triton_installed():
        raise RuntimeError('execution="triton" needs the optional package triton: pip install "everygraph[gpu]"')
    if not triton_runs_on(device):
        raise RuntimeError(
            f'execution="triton" runs on CUDA tensors (or on CPU under TRITON_INTERPRET=1), got a tensor on {device}'
        )


def autotune_configs(configs: list) -> list:
    """The ``triton.Config`` list for ``@triton.autotune``: all of them on a GPU (benchmarked
    once per key), the first under the interpreter, which has no GPU timer and ignores
    ``num_warps`` and ``num_stages``."""
    return configs[:1] if interpreting() else configs
