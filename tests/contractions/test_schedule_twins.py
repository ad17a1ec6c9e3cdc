"""Transposed twins of matrix products: a pattern that is the transpose of another whose value
a matrix product writes (``(H, a, b)`` beside ``(H, b, a)``) is a transposing copy of that
channel, made right after the product, not a second product. Values are checked against
brute-force homomorphism counts, never against saved outputs."""

import pytest
import torch

from everygraph.contractions import Pattern, compile_plan, evaluate
from homomorphism_reference import brute_force  # tests/contractions/homomorphism_reference.py

# the value of each is a matrix product (a triangle with a pendant path; a 4-cycle with a tail)
STRINGS = ["ab,bc,ca,cd->ad", "ab,bc,bd,cd,de->ae", "ab,bc,cd,db->ac"]


def _twins(directed: bool) -> list[Pattern]:
    patterns = []
    for s in STRINGS:
        body, out = s.split("->")
        patterns += [Pattern.from_string(s, directed=directed), Pattern.from_string(f"{body}->{out[::-1]}", directed=directed)]
    return patterns


@pytest.mark.parametrize("layout", ["channel_last", "channel_first"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("directed", [False, True])
def test_product_twins_are_copies_equal_to_brute_force(directed, dtype, layout):
    patterns = _twins(directed)
    plan = compile_plan(patterns)
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(3, 6, 6, generator=gen) < 0.6).double() * torch.rand(3, 6, 6, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out = evaluate(plan, x.to(dtype), layout=layout)
    (schedule,) = plan._schedules.values()
    written = {op[3].index for op in schedule.ops if op[0] == "bmm" and op[3].kind == "slot"}
    copied = {op[2].index: op[1].index for op in schedule.ops if op[0] == "copy" and op[1].kind == op[2].kind == "slot"}
    # one product per pair, its twin a copy of the product's channel
    for pair in range(len(STRINGS)):
        first, second = 2 * pair, 2 * pair + 1
        assert not {first, second} <= written
        assert second in copied or first in copied
    assert written
    for j, p in enumerate(patterns):
        got = out[..., j] if layout == "channel_last" else out[:, j]
        for g in range(x.shape[0]):
            torch.testing.assert_close(got[g].double(), brute_force(p, x[g]), msg=lambda m: f"{p}, graph {g}: {m}",
                                       rtol=1e-5 if dtype == torch.float32 else 1e-7, atol=1e-5)
