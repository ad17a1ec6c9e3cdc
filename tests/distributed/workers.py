"""What each rank runs: several checks share one spawn (starting a process costs seconds)."""

from __future__ import annotations

from cp_cases import worker as context_parallel_worker
from ddp_cases import CASES, ddp_worker

# Uneven pieces of one sequence, and an empty one (its rank passes the state through).
LENGTHS = {2: [7, 5], 3: [5, 0, 8]}


def all_checks(rank: int, world_size: int) -> dict:
    results = {"context_parallel": context_parallel_worker(rank, world_size, LENGTHS[world_size])}
    if world_size == 2:
        results["data_parallel"] = ddp_worker(rank, world_size, sorted(CASES))
    return results
