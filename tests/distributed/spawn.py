"""Run a function on ``world_size`` local gloo processes, bounded in time, loopback only.

``run_on_ranks(fn, world_size, *args)`` spawns ``fn(rank, world_size, *args)`` in fresh
interpreters with ``MASTER_ADDR=127.0.0.1`` and a free port, each process calling
``init_process_group("gloo")`` with a timeout before ``fn`` and destroying it after. Each
process returns its result by pickling it into a file; the list of results (one per rank) is
returned. A process that raises or that is still running at ``timeout`` fails the test.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, fn: Callable, world_size: int, port: int, out_dir: str, args: tuple) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group(
        "gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=60),
        init_method=f"tcp://127.0.0.1:{port}",
    )
    try:
        result = fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()
    with open(Path(out_dir) / f"rank{rank}.pkl", "wb") as f:
        pickle.dump(result, f)


def run_on_ranks(fn: Callable, world_size: int, *args: Any, timeout: float = 120.0) -> list[Any]:
    with tempfile.TemporaryDirectory() as out_dir:
        context = mp.start_processes(
            _entry, args=(fn, world_size, free_port(), out_dir, args), nprocs=world_size,
            join=False, start_method="spawn",
        )
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{world_size} gloo processes still running after {timeout} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
                    process.join(5)
        results = []
        for rank in range(world_size):
            with open(Path(out_dir) / f"rank{rank}.pkl", "rb") as f:
                results.append(pickle.load(f))
        return results
