import pytest
from spawn import run_on_ranks
from workers import all_checks


@pytest.fixture(scope="session")
def rank_results():
    """``rank_results(world_size)``: every rank's results of ``workers.all_checks``, one spawn
    per world size for the whole session."""
    cache: dict[int, list] = {}

    def get(world_size: int) -> list:
        if world_size not in cache:
            cache[world_size] = run_on_ranks(all_checks, world_size, timeout=240)
        return cache[world_size]

    return get
