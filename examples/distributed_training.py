"""Data-parallel training of a graph model with ``torch.distributed``: sampler, checkpoints, resume.

The task: molecule-like graphs (a random spanning tree of atoms with valences, a few ring
closures, atom types C/N/O) and the number of carbon-heteroatom bonds as a regression target.
The model: atom embedding -> two ``SAGEConv`` layers aggregating with
``everygraph.nn.LCMAggregation`` -> sum over atoms -> a linear read-out.

Each process trains a ``DistributedDataParallel`` copy on its share of every epoch
(``DistributedSampler``, reshuffled per epoch by ``set_epoch``). Batches of the ranks may
differ in size (the last one of an epoch); the loss of each rank is its summed squared error
divided by the global number of graphs (all-reduced) times the world size, so the averaged
gradient is exactly that of the global batch. Rank 0 alone prints and writes the checkpoint
(model, optimizer, epoch, step) after each epoch; ``--resume`` reloads it with
``torch.load(weights_only=True)`` and continues with the next epoch, so an interrupted run
resumed to the same number of epochs ends with the same parameters.

Run it::

    torchrun --nproc_per_node=2 examples/distributed_training.py            # about a minute
    python examples/distributed_training.py --nproc 2                       # same, spawns itself
    python examples/distributed_training.py --quick --epochs 2 --out run/   # a smoke test
    python examples/distributed_training.py --quick --epochs 4 --out run/ --resume

Without ``torchrun`` the script starts ``--nproc`` processes itself on 127.0.0.1. On CUDA
machines it uses NCCL with one GPU per process, otherwise gloo. It writes
``distributed_training.json`` (the loss of every epoch) and ``checkpoint.pt`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import SAGEConv, global_add_pool

from everygraph.nn import LCMAggregation

ATOMS = ("C", "N", "O")
VALENCE = (4, 3, 2)
ATOM_PROBABILITY = (0.7, 0.15, 0.15)


def molecule_like(num_graphs: int, seed: int = 0) -> list[Data]:
    """Random molecule-like graphs: atoms 6..20, a spanning tree respecting valences, up to two
    ring closures; ``y`` = number of bonds between a carbon and a heteroatom."""
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(num_graphs):
        n = int(torch.randint(6, 21, (1,), generator=gen))
        atom = torch.multinomial(torch.tensor(ATOM_PROBABILITY), n, replacement=True, generator=gen)
        atom[0] = 0  # a carbon to start from
        free = torch.tensor([VALENCE[a] for a in atom.tolist()])
        bonds: list[tuple[int, int]] = []
        for v in range(1, n):
            candidates = (free[:v] > 0).nonzero().flatten()
            u = int(candidates[torch.randint(len(candidates), (1,), generator=gen)])
            bonds.append((u, v))
            free[u] -= 1
            free[v] -= 1
        for _ in range(2):  # ring closures between atoms that still have a free valence
            open_atoms = (free > 0).nonzero().flatten()
            if len(open_atoms) < 2:
                break
            u, v = open_atoms[torch.randperm(len(open_atoms), generator=gen)[:2]].tolist()
            if (min(u, v), max(u, v)) not in {(min(a, b), max(a, b)) for a, b in bonds}:
                bonds.append((u, v))
                free[u] -= 1
                free[v] -= 1
        edge = torch.tensor(bonds).t()
        edge_index = torch.cat([edge, edge.flip(0)], 1)
        hetero_bonds = sum(int((atom[a] == 0) != (atom[b] == 0)) for a, b in bonds)
        graphs.append(Data(atom=atom, edge_index=edge_index, y=torch.tensor([float(hetero_bonds)]), num_nodes=n))
    return graphs


class MoleculeModel(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.embed = nn.Embedding(len(ATOMS), hidden)
        self.convs = nn.ModuleList(
            [SAGEConv(hidden, hidden, aggr=LCMAggregation(hidden, hidden)) for _ in range(2)]
        )
        self.readout = nn.Linear(hidden, 1)

    def forward(self, atom: Tensor, edge_index: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        h = self.embed(atom)
        for conv in self.convs:
            h = conv(h, edge_index).relu()
        return self.readout(global_add_pool(h, batch, size=num_graphs)).squeeze(-1)


def log(*args: object) -> None:
    """Print from rank 0 only (every rank computes the same global numbers)."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(*args, flush=True)


def train(args: argparse.Namespace) -> None:
    rank, world_size = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}") if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(args.seed)  # the same initial parameters on every rank (DDP also broadcasts rank 0's)
    model = MoleculeModel(args.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    out = Path(args.out)
    checkpoint_path = out / "checkpoint.pt"
    history: list[dict] = []
    first_epoch, step = 0, 0
    if args.resume and checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        first_epoch, step = checkpoint["epoch"] + 1, checkpoint["step"]
        history = json.loads((out / "distributed_training.json").read_text())["epochs"][:first_epoch]
        log(f"resumed from {checkpoint_path}: epoch {checkpoint['epoch']} done, step {step}")
    ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    dataset = molecule_like(args.num_graphs, seed=args.seed + 1)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size // world_size, sampler=sampler)
    log(f"{world_size} processes ({dist.get_backend()}), {len(dataset)} graphs, "
        f"{sum(p.numel() for p in model.parameters())} parameters, {len(loader)} steps per epoch")
    for epoch in range(first_epoch, args.epochs):
        sampler.set_epoch(epoch)
        ddp_model.train()
        start = time.perf_counter()
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # squared error, graphs
        for batch in loader:
            batch = batch.to(device)
            prediction = ddp_model(batch.atom, batch.edge_index, batch.batch, batch.num_graphs)
            squared_error = ((prediction - batch.y) ** 2).sum()
            count = torch.tensor([float(batch.num_graphs)], device=device)
            dist.all_reduce(count)
            optimizer.zero_grad()
            (squared_error * world_size / count).backward()
            optimizer.step()
            totals += torch.stack([squared_error.detach().double(), torch.tensor(float(batch.num_graphs), device=device, dtype=torch.float64)])
            step += 1
        dist.all_reduce(totals)
        mse = float(totals[0] / totals[1])
        history.append({"epoch": epoch, "step": step, "mse": mse})
        log(f"epoch {epoch}: train mse {mse:.4f} ({time.perf_counter() - start:.1f} s, step {step})")
        if rank == 0:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step}
            torch.save(state, checkpoint_path.with_suffix(".tmp"))
            os.replace(checkpoint_path.with_suffix(".tmp"), checkpoint_path)  # never a half-written checkpoint
            (out / "distributed_training.json").write_text(json.dumps({"world_size": world_size, "epochs": history}, indent=1))
        dist.barrier()
    if history:
        log(f"final train mse {history[-1]['mse']:.6f} after {step} steps")


def _worker(rank: int, world_size: int, port: int, args: argparse.Namespace) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(args.threads)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=120))
    try:
        train(args)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small data set (smoke test)")
    parser.add_argument("--epochs", type=int, default=None, help="train until this many epochs are done")
    parser.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    parser.add_argument("--num-graphs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size (split over ranks)")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--nproc", type=int, default=2, help="processes to spawn when not launched by torchrun")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--seed", type=int, default=0, help="seeds the parameters, the data and the sampler")
    parser.add_argument("--out", default=".", help="directory for the checkpoint and the loss log")
    args = parser.parse_args()
    args.epochs = args.epochs if args.epochs is not None else (4 if args.quick else 20)
    args.num_graphs = args.num_graphs if args.num_graphs is not None else (192 if args.quick else 2000)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if "LOCAL_RANK" in os.environ:  # launched by torchrun: the environment holds rank and rendezvous
        torch.set_num_threads(args.threads)
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=120))
        try:
            train(args)
        finally:
            dist.destroy_process_group()
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_worker, args=(args.nproc, port, args), nprocs=args.nproc, start_method="spawn")


if __name__ == "__main__":
    main()
