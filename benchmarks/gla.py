"""Gated linear attention on sequences: the chunkwise form against the engine's recurrent and
wavefront executions, in the same run.

``gated_linear_attention(None, ..., execution=...)`` with ``"chunked"`` (the default on CPU),
``"recurrent"`` (the engine's in-place loop over positions, hand-written adjoint) and
``"wavefront"`` (one batched step per position), float32, forward and forward+backward.
Prints medians of interleaved repeats and the ratio of each execution's time to the chunked
one (> 1: chunked is faster).

    python benchmarks/gla.py                  # L = 512, 2048, 8192; B = 2, H = 4, dk = 32, dv = 64
    python benchmarks/gla.py --quick          # small sizes, a smoke test
    python benchmarks/gla.py --threads 1 --repeats 7
    python benchmarks/gla.py --chunks         # chunk / sub-chunk sizes of the chunked form, against chunks of 8
                                              # with pairwise decays only (the form before secondary chunking)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from everygraph.sequence import gated_linear_attention, gated_linear_attention_chunked

EXECUTIONS = ("chunked", "recurrent", "wavefront")
#: (chunk, sub-chunk) settings for --chunks; the first is the baseline (pairwise decays only)
CHUNK_SETTINGS = ((8, None), (16, 4), (32, 4), (32, 8), (64, 8))


def make_inputs(batch: int, length: int, heads: int, dk: int, dv: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(batch, length, heads, dk, generator=g) for _ in range(2))
    v = torch.randn(batch, length, heads, dv, generator=g)
    log_alpha = F.logsigmoid(torch.randn(batch, length, heads, dk, generator=g)) / 16
    return [q, k, v, log_alpha]


def run(execution: str, inputs: list[torch.Tensor], backward: bool) -> None:
    if backward:
        leaves = [t.clone().requires_grad_() for t in inputs]
        gated_linear_attention(None, *leaves, execution=execution).sum().backward()
    else:
        with torch.no_grad():
            gated_linear_attention(None, *inputs, execution=execution)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lengths", type=int, nargs="*", default=None)
    parser.add_argument("--chunks", action="store_true", help="compare chunk and sub-chunk sizes of the chunked form")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.chunks:
        compare_chunk_sizes(args)
        return
    lengths = args.lengths or ([256, 1024] if args.quick else [512, 2048, 8192])
    batch, heads, dk, dv = (1, 2, 16, 16) if args.quick else (2, 4, 32, 64)
    print(f"GLA on sequences, float32, B={batch} H={heads} dk={dk} dv={dv}, {args.threads} thread(s), "
          f"median of {args.repeats} interleaved repeats")
    print(f"{'L':>6} {'pass':>9} " + " ".join(f"{e + ' (s)':>15}" for e in EXECUTIONS) + "   ratios to chunked")
    for length in lengths:
        inputs = make_inputs(batch, length, heads, dk, dv)
        with torch.no_grad():
            outs = [gated_linear_attention(None, *inputs, execution=e) for e in EXECUTIONS]
        diff = max((o - outs[0]).abs().max().item() for o in outs[1:])
        for backward in (False, True):
            times = {e: [] for e in EXECUTIONS}
            for e in EXECUTIONS:
                run(e, inputs, backward)  # warm-up
            for _ in range(args.repeats):
                for e in EXECUTIONS:
                    start = time.perf_counter()
                    run(e, inputs, backward)
                    times[e].append(time.perf_counter() - start)
            median = {e: statistics.median(ts) for e, ts in times.items()}
            ratios = "  ".join(f"{e} {median[e] / median['chunked']:.2f}x" for e in EXECUTIONS[1:])
            label = "fwd+bwd" if backward else "fwd"
            print(f"{length:>6} {label:>9} " + " ".join(f"{median[e]:>15.4f}" for e in EXECUTIONS)
                  + f"   {ratios}   (max |diff| {diff:.1e})")


def compare_chunk_sizes(args: argparse.Namespace) -> None:
    lengths = args.lengths or [2048]
    batch, heads, dk, dv = 2, 4, 32, 64
    print(f"GLA chunked form, float32, B={batch} H={heads} dk={dk} dv={dv}, {args.threads} thread(s), "
          f"median of {args.repeats} interleaved repeats; ratio = time / time of chunks of 8 without sub-chunks")
    for length in lengths:
        inputs = make_inputs(batch, length, heads, dk, dv)
        for backward in (False, True):
            times: dict[tuple, list[float]] = {setting: [] for setting in CHUNK_SETTINGS}
            for _ in range(args.repeats):
                for chunk, sub in CHUNK_SETTINGS:
                    leaves = [t.clone().requires_grad_(backward) for t in inputs]
                    start = time.perf_counter()
                    out = gated_linear_attention_chunked(*leaves, chunk_size=chunk, sub_chunk_size=sub)
                    if backward:
                        out.sum().backward()
                    times[(chunk, sub)].append(time.perf_counter() - start)
            base = statistics.median(times[CHUNK_SETTINGS[0]])
            row = "  ".join(f"{c}/{s}: {statistics.median(t) * 1e3:.0f} ms ({statistics.median(t) / base:.2f})"
                            for (c, s), t in times.items())
            print(f"L={length} {'fwd+bwd' if backward else 'fwd'}: {row}", flush=True)


if __name__ == "__main__":
    main()
