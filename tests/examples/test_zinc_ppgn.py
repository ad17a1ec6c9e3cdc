"""Runs examples/zinc_ppgn.py --synthetic --quick: generated raw files go through PyG's ZINC
class (the loading path real users take), then both models train briefly."""

import json
import math
import pickle

import torch


def test_zinc_ppgn_synthetic_quick(run_example, tmp_path):
    proc = run_example("zinc_ppgn", "--synthetic")
    root = tmp_path / "zinc_synthetic"
    # raw files in ZINC's format, processed by torch_geometric.datasets.ZINC
    with open(root / "raw" / "train.pickle", "rb") as f:
        mols = pickle.load(f)
    mol = mols[0]
    n = mol["atom_type"].numel()
    assert mol["bond_type"].shape == (n, n) and torch.equal(mol["bond_type"], mol["bond_type"].T)
    assert (root / "subset" / "processed" / "train.pt").exists()
    assert "{'train': 48, 'val': 32, 'test': 32}" in proc.stdout
    results = json.loads((tmp_path / "zinc_ppgn.json").read_text())
    assert set(results) == {"PPGN++", "PPGN++(5)"}
    for r in results.values():
        assert len(r["val_curve"]) == 2 and math.isfinite(r["test_mae"])
    assert (tmp_path / "zinc_ppgn.png").stat().st_size > 1000
    assert "(degree=5, edge=1," in proc.stdout  # the one degree-5 element PPGN cannot compute
