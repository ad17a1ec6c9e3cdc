"""Runs examples/zinc_ppgn.py --synthetic --quick: generated raw files go through PyG's ZINC
class (the loading path real users take), then both models train and beat the mean baseline."""

import json
import math
import pickle
import random

import networkx as nx
import pytest
import torch


def test_zinc_ppgn_synthetic_quick(run_example, tmp_path):
    proc = run_example("zinc_ppgn", "--synthetic", timeout=600)
    root = tmp_path / "zinc_synthetic"
    # raw files in ZINC's format, processed by torch_geometric.datasets.ZINC
    with open(root / "raw" / "train.pickle", "rb") as f:
        mols = pickle.load(f)
    mol = mols[0]
    n = mol["atom_type"].numel()
    assert mol["bond_type"].shape == (n, n) and torch.equal(mol["bond_type"], mol["bond_type"].T)
    assert (root / "subset" / "processed" / "train.pt").exists()
    assert "{'train': 256, 'val': 64, 'test': 128}" in proc.stdout
    results = json.loads((tmp_path / "zinc_ppgn.json").read_text())
    assert set(results) == {"PPGN++", "PPGN++(5)"}
    with open(root / "raw" / "test.pickle", "rb") as f:
        test_y = torch.tensor([m["logP_SA_cycle_normalized"].item() for m in pickle.load(f)])
    train_y = torch.tensor([m["logP_SA_cycle_normalized"].item() for m in mols])
    baseline = (test_y - train_y.mean()).abs().mean().item()
    for name, r in results.items():
        assert len(r["val_curve"]) == 20 and math.isfinite(r["test_mae"])
        assert r["mean_baseline_test_mae"] == pytest.approx(baseline, rel=1e-5)
    # both models learn the target, PPGN++(5) more: over seeds 0-4 of the quick run, the test MAE
    # was 0.803-0.867 times the mean baseline's for PPGN++ and 0.654-0.740 times for PPGN++(5)
    assert results["PPGN++"]["test_mae"] < 0.95 * baseline, (results["PPGN++"]["test_mae"], baseline)
    assert results["PPGN++(5)"]["test_mae"] < 0.85 * baseline, (results["PPGN++(5)"]["test_mae"], baseline)
    assert (tmp_path / "zinc_ppgn.png").stat().st_size > 1000
    assert "(degree=5, edge=1," in proc.stdout  # the one degree-5 element PPGN cannot compute


def test_synthetic_target_by_hand(load_example):
    example = load_example("zinc_ppgn")
    # a triangle (atoms 0-2) bridged to a hexagon (atoms 3-8), with one side chain atom (9)
    g = nx.Graph()
    nx.add_cycle(g, [0, 1, 2])
    nx.add_cycle(g, [3, 4, 5, 6, 7, 8])
    g.add_edges_from([(2, 3), (5, 9)])
    atoms = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    contribution = example.ATOM_CONTRIBUTION
    expected = sum(contribution[:10]) / 10 - 0.5 * 3 / 10 + 0.25 * 6 / 10
    assert example.synthetic_target(g, atoms, random.Random(0), noise=0.0) == pytest.approx(expected)
    # a 4-ring counts as small, a 5-ring as neither
    square, pentagon = nx.cycle_graph(4), nx.cycle_graph(5)
    assert example.synthetic_target(square, [0] * 4, random.Random(0), noise=0.0) == pytest.approx(contribution[0] - 0.5)
    assert example.synthetic_target(pentagon, [0] * 5, random.Random(0), noise=0.0) == pytest.approx(contribution[0])
    # the noise is N(0, noise^2) from the given generator
    draws = [example.synthetic_target(pentagon, [0] * 5, random.Random(s), noise=0.05) - contribution[0] for s in range(2000)]
    assert abs(sum(draws) / len(draws)) < 0.005 and 0.045 < (sum(d * d for d in draws) / len(draws)) ** 0.5 < 0.055
    # the contributions are a fixed table over the 28 atom types
    assert len(contribution) == example.NUM_ATOM_TYPES and all(-1.0 <= c <= 1.0 for c in contribution)
    assert len(set(contribution)) > 20
