"""Context-parallel selective scans on each rank, and the single-process scan they must equal."""

from __future__ import annotations

import torch

from everygraph.sequence import selective_scan
from everygraph.sequence.distributed import selective_scan_context_parallel

BATCH, CHANNELS, STATE, GROUPS = 2, 4, 3, 2
# (name, B/C layout, with z, D, delta_bias and softplus, reverse)
CONFIGS = [
    ("plain", "bnl", False, False),
    ("gated", "bnl", True, False),
    ("grouped reverse", "bgnl", True, True),
    ("fixed B and C", "dn", True, False),
    ("reverse", "bnl", False, True),
    # Steps of exactly 0 at every piece start (2 ranks: 0, 7; 3 ranks: 0, 5): the correction
    # cannot be injected as the input of a second scan and is evaluated directly.
    ("zero first steps", "bnl", False, False),
    ("zero first steps reverse", "bgnl", False, True),
]
PIECE_BOUNDARIES = [0, 4, 5, 6, 7, 12]


def inputs(layout: str, gated: bool, length: int, zero_steps: bool = False) -> dict:
    gen = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    bc_shape = {"bnl": (BATCH, STATE, length), "bgnl": (BATCH, GROUPS, STATE, length), "dn": (CHANNELS, STATE)}[layout]
    x = dict(u=r(BATCH, CHANNELS, length), delta=r(BATCH, CHANNELS, length) * 0.5,
             A=-torch.rand(CHANNELS, STATE, generator=gen, dtype=torch.float64) - 0.2, B=r(*bc_shape), C=r(*bc_shape))
    if zero_steps:  # first (and, reversed, last) positions of the pieces of both splits
        x["delta"] = x["delta"].abs()
        x["delta"][..., [p for p in PIECE_BOUNDARIES if p < length]] = 0.0
    if gated:
        x.update(D=r(CHANNELS), z=r(BATCH, CHANNELS, length), delta_bias=r(CHANNELS) * 0.1)
    x["weight"] = r(BATCH, CHANNELS, length)  # loss = sum(out * weight) + sum(last state * last_weight)
    x["last_weight"] = r(BATCH, CHANNELS, STATE)
    return x


def piece_names(x: dict, layout: str) -> list[str]:
    return [n for n in ("u", "delta", "z", "weight") + (("B", "C") if layout != "dn" else ()) if n in x]


def run(x: dict, layout: str, gated: bool, reverse: bool, piece: slice | None, holds_end: bool):
    """Scan (the piece, when ``piece`` is given, context-parallel) and backpropagate.

    Returns the output, the final state when this rank holds the sequence's end, and the
    gradients of every input."""
    pieces = piece_names(x, layout)
    leaves = {n: (t[..., piece] if (piece is not None and n in pieces) else t).clone().requires_grad_()
              for n, t in x.items() if n not in ("weight", "last_weight")}
    weight = x["weight"][..., piece] if piece is not None else x["weight"]
    args = dict(leaves, delta_softplus=gated, return_last_state=True, reverse=reverse)
    if piece is None:
        out, last = selective_scan(**args)
    else:
        out, last = selective_scan_context_parallel(**args)
    loss = (out * weight).sum()
    if holds_end:
        loss = loss + (last * x["last_weight"]).sum()
    loss.backward()
    return out.detach(), (last.detach() if holds_end else None), {n: t.grad for n, t in leaves.items()}


def cp_worker(rank: int, world_size: int, lengths: list[int]) -> dict:
    """Every config on this rank's piece of a sequence of ``sum(lengths)`` positions."""
    start = sum(lengths[:rank])
    piece = slice(start, start + lengths[rank])
    results = {}
    for name, layout, gated, reverse in CONFIGS:
        x = inputs(layout, gated, sum(lengths), name.startswith("zero"))
        holds_end = rank == (0 if reverse else world_size - 1)
        results[name] = run(x, layout, gated, reverse, piece, holds_end)
    return results


# pLSTM / linear-attention path scans: (transition kind, heads, dk, dv)
PATH_KINDS = [("scalar", 2, 3, 2), ("diagonal", 1, 3, 2), ("elementwise", 2, 2, 3)]


def path_inputs(kind: str, heads: int, dk: int, dv: int, length: int) -> dict:
    gen = torch.Generator().manual_seed(5)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    gate = {"scalar": (), "diagonal": (dk,), "elementwise": (dk, dv)}[kind]
    return dict(q=r(1, length, heads, dk), k=r(1, length, heads, dk), v=r(1, length, heads, dv),
                source=u(1, length, heads), transition=0.5 + 0.5 * u(1, length, heads, *gate),
                mark=u(1, length, heads), direct=r(1, length, heads),
                weight=r(1, length, heads, dv), last_weight=r(1, heads, dk, dv))


def run_path(x: dict, kind: str, piece: slice | None, holds_end: bool):
    from everygraph.sequence import path_scan
    from everygraph.sequence.distributed import path_scan_context_parallel

    leaves = {n: (t[:, piece] if piece is not None else t).clone().requires_grad_()
              for n, t in x.items() if n not in ("weight", "last_weight")}
    weight = x["weight"][:, piece] if piece is not None else x["weight"]
    if piece is None:
        h, last = path_scan(**leaves, kind=kind)
    else:
        h, last = path_scan_context_parallel(**leaves, kind=kind)
    loss = (h * weight).sum() + ((last * x["last_weight"]).sum() if holds_end else 0)
    loss.backward()
    # An empty piece's inputs hold no numbers and get no gradient.
    grads = {n: torch.zeros_like(t) if t.grad is None and t.numel() == 0 else t.grad for n, t in leaves.items()}
    return h.detach(), (last.detach() if holds_end else None), grads


def path_worker(rank: int, world_size: int, lengths: list[int]) -> dict:
    start = sum(lengths[:rank])
    piece = slice(start, start + lengths[rank])
    return {config[0]: run_path(path_inputs(*config, sum(lengths)), config[0], piece, rank == world_size - 1)
            for config in PATH_KINDS}


def worker(rank: int, world_size: int, lengths: list[int]) -> dict:
    """Both scans in one spawn."""
    return {"selective": cp_worker(rank, world_size, lengths), "path": path_worker(rank, world_size, lengths)}
