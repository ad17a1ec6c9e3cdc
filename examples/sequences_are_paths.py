"""Sequences are path graphs: Mamba, pLSTM-1d and a GRU on selective copying.

A sequence of length ``L`` is the lattice ``Lattice((L,))`` = ``path_graph(L)``: one node per
position, one edge ``t -> t+1``. Mamba's selective scan and pLSTM-1d are both linear
recurrences over this DAG (a state per node, one transition per edge); a GRU is the
nonlinear recurrence on the same graph. This tutorial

1. builds the lattice and checks, by autograd, that each model's output at node ``t``
   depends exactly on the nodes that reach ``t`` in the DAG (its ancestors: the prefix);
2. trains all three on *selective copying* (Gu & Dao 2023, section 3.1): ``num_tokens``
   data tokens are scattered among noise tokens; after them, ``num_tokens`` query markers
   ask the model to emit the data tokens in order. Solving it needs content-dependent
   gating (what to keep, what to skip), the point of selective state spaces;
3. plots loss and accuracy curves to ``--out``.

    python examples/sequences_are_paths.py            # L=32, 4 data tokens, 400 steps (minutes)
    python examples/sequences_are_paths.py --quick    # a tiny run (seconds)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from everygraph.graphlib import Lattice, path_graph  # noqa: E402
from everygraph.nn import Mamba, PLSTM1d  # noqa: E402

NOISE, QUERY = 0, 1  # data tokens are 2 .. vocab-1


def selective_copying(batch: int, length: int, num_tokens: int, vocab: int, generator: torch.Generator):
    """Inputs ``[batch, length]``, targets ``[batch, length]`` (-100 = ignored).

    The first ``length - num_tokens`` positions hold ``num_tokens`` random data tokens at
    random positions, noise elsewhere; the last ``num_tokens`` positions are query markers
    whose targets are the data tokens in order of appearance."""
    body = length - num_tokens
    inputs = torch.full((batch, length), NOISE, dtype=torch.long)
    targets = torch.full((batch, length), -100, dtype=torch.long)
    data = torch.randint(2, vocab, (batch, num_tokens), generator=generator)
    positions = torch.rand(batch, body, generator=generator).argsort(dim=1)[:, :num_tokens].sort(dim=1).values
    inputs.scatter_(1, positions, data)
    inputs[:, body:] = QUERY
    targets[:, body:] = data
    return inputs, targets


class GRUMixer(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gru = nn.GRU(dim, dim, batch_first=True)

    def forward(self, x):
        return self.gru(x)[0]


class SequenceModel(nn.Module):
    """Embedding -> layers of (LayerNorm -> mixer -> residual) -> LayerNorm -> logits."""

    def __init__(self, mixer: str, vocab: int, dim: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        make = {
            "Mamba": lambda: Mamba(dim, d_state=16),
            "pLSTM-1d": lambda: PLSTM1d(dim, num_heads=4, mode="D"),
            "GRU": lambda: GRUMixer(dim),
        }[mixer]
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.mixers = nn.ModuleList(make() for _ in range(layers))
        self.final = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def hidden(self, h):
        for norm, mixer in zip(self.norms, self.mixers):
            h = h + mixer(norm(h))
        return self.final(h)

    def forward(self, tokens):
        return self.head(self.hidden(self.embed(tokens)))


def dependency_matches_lattice(model: SequenceModel, length: int) -> bool:
    """``d out_t / d in_s != 0`` exactly when ``s`` is an ancestor of ``t`` (or ``t``) in
    ``Lattice((length,))``: the model is a causal scan over the path DAG."""
    lattice = Lattice((length,))
    graph = lattice.to_networkx()
    reach = torch.zeros(length, length, dtype=torch.bool)
    for t in range(length):
        for s in nx.ancestors(graph, t) | {t}:
            reach[t, s] = True
    x = torch.randn(1, length, model.embed.embedding_dim, dtype=torch.float64)
    model = model.double()
    jac = torch.autograd.functional.jacobian(lambda inp: model.hidden(inp).sum(-1), x)  # [1, L, 1, L, dim]
    depends = jac[0, :, 0].abs().sum(-1) > 0
    model.float()
    return bool(torch.equal(depends, reach))


def train(name, args, generator_seed):
    torch.manual_seed(args.seed)
    model = SequenceModel(name, args.vocab, args.dim, args.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(generator_seed)
    test_inputs, test_targets = selective_copying(512, args.length, args.num_tokens, args.vocab,
                                                  torch.Generator().manual_seed(12345))
    curve = {"step": [], "loss": [], "accuracy": []}
    start = time.perf_counter()
    bar = tqdm(range(1, args.steps + 1), desc=f"{name:>8}", disable=args.no_progress, leave=False)
    for step in bar:
        model.train()
        inputs, targets = selective_copying(args.batch, args.length, args.num_tokens, args.vocab, gen)
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits.reshape(-1, args.vocab), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        loss = loss.detach()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                pred = model(test_inputs).argmax(-1)
            mask = test_targets != -100
            acc = float((pred[mask] == test_targets[mask]).float().mean())
            curve["step"].append(step)
            curve["loss"].append(float(loss))
            curve["accuracy"].append(acc)
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{acc:.3f}")
    seconds = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())
    causal = dependency_matches_lattice(model, min(args.length, 12))
    return model, dict(curve=curve, seconds=seconds, parameters=parameters, final_accuracy=curve["accuracy"][-1],
                       final_loss=curve["loss"][-1], scan_over_lattice=causal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run for tests (seconds)")
    parser.add_argument("--out", default="out", help="directory for the plot and results")
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--num-tokens", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=10)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    # one thread: these models are small, and on a busy machine a second OpenMP thread makes
    # each mid-sized op wait for a descheduled worker (measured 10x slower per training step)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.length, args.num_tokens, args.dim, args.steps, args.batch, args.eval_every = 16, 3, 16, 30, 16, 10
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    lattice = Lattice((args.length,))
    print(f"A sequence of length {args.length} is Lattice(({args.length},)): {lattice.num_nodes} nodes, "
          f"{lattice.num_edges} edges t -> t+1; path_graph is the same graph: "
          f"{torch.equal(lattice.edge_index, path_graph(args.length).edge_index)}")
    print(f"Task: selective copying, {args.num_tokens} data tokens among noise, vocab {args.vocab}; "
          f"chance accuracy {1 / (args.vocab - 2):.3f}")

    results = {}
    for name in ("Mamba", "pLSTM-1d", "GRU"):
        _, r = train(name, args, generator_seed=args.seed + 1)
        results[name] = r
        print(f"{name}: {r['parameters']} parameters, accuracy {r['final_accuracy']:.3f}, "
              f"loss {r['final_loss']:.3f}, {r['seconds']:.1f} s; output at t depends exactly on "
              f"t's ancestors in the lattice: {r['scan_over_lattice']}")

    print("\n| model | parameters | accuracy | loss | seconds |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['parameters']} | {r['final_accuracy']:.3f} | {r['final_loss']:.3f} | {r['seconds']:.1f} |")

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in results.items():
        ax_loss.plot(r["curve"]["step"], r["curve"]["loss"], label=name)
        ax_acc.plot(r["curve"]["step"], r["curve"]["accuracy"], label=name)
    ax_loss.set(xlabel="step", ylabel="training loss", title="loss", yscale="log")
    ax_acc.set(xlabel="step", ylabel="test accuracy (query positions)", title="selective copying accuracy", ylim=(0, 1))
    ax_acc.axhline(1 / (args.vocab - 2), color="gray", ls=":", label="chance")
    for ax in (ax_loss, ax_acc):
        ax.legend()
    fig.suptitle(f"Sequences are paths: Lattice(({args.length},)), {args.num_tokens} tokens to copy")
    fig.tight_layout()
    fig.savefig(out / "sequences_are_paths.png", dpi=120)
    (out / "sequences_are_paths.json").write_text(json.dumps(dict(args=vars(args), results=results), indent=1))
    print(f"\nwrote {out / 'sequences_are_paths.png'} and {out / 'sequences_are_paths.json'}")


if __name__ == "__main__":
    main()
