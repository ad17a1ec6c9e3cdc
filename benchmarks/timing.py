"""The timing loop the scan benchmarks share: forward and forward+backward of several
contenders, repeats interleaved so that a change in the machine's load hits all of them.

Imported by the scripts beside it (``python benchmarks/x.py`` puts this folder on ``sys.path``)."""

from __future__ import annotations

import functools
import statistics
from typing import Callable

import torch


def forward_backward_medians(
    calls: dict[str, Callable[[], torch.Tensor]], leaves: list[torch.Tensor], repeat: int, clock: Callable[[], float]
) -> dict[str, tuple[float, float]]:
    """Median seconds of ``call()`` without gradients and of ``call().square().sum().backward()``
    with ``leaves`` requiring them, per contender; one warm-up round first (JIT compilation,
    caches), then ``repeat`` rounds over all contenders in turn."""
    times = {name: ([], []) for name in calls}
    for _ in range(repeat + 1):
        for name, call in calls.items():
            with torch.no_grad():
                start = clock()
                call()
                forward = clock() - start
            for t in leaves:
                t.requires_grad_()
            start = clock()
            call().square().sum().backward()
            both = clock() - start
            for t in leaves:
                t.grad = None
                t.requires_grad_(False)
            times[name][0].append(forward)
            times[name][1].append(both)
    return {name: (statistics.median(f[1:]), statistics.median(b[1:])) for name, (f, b) in times.items()}


def execution_medians(
    call: Callable[[str], torch.Tensor], executions, leaves: list[torch.Tensor], repeat: int, clock: Callable[[], float]
) -> dict[str, tuple[float, float]]:
    """:func:`forward_backward_medians` of ``call(execution)`` for each of ``executions``."""
    return forward_backward_medians({e: functools.partial(call, e) for e in executions}, leaves, repeat, clock)
