"""The arrow-pointing tutorial: --quick runs end to end and writes its plot and results, and
its augmentation keeps labels (checked by re-rendering moved geometry)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from everygraph.datasets import ArrowPointing

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "arrow_pointing.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("arrow_pointing_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--quick", "--no-progress", "--threads", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "arrow_pointing.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "arrow_pointing.json").read_text())
    assert summary["settings"]["augment"] is True
    results = summary["results"]
    assert set(results) == {"pLSTM", "ViT"}
    for name, r in results.items():
        assert 0.0 <= r["test"] <= 1.0 and 0.0 <= r["extrapolation"] <= 1.0
        assert f"{name}: {r['parameters']} parameters" in result.stdout
        # accuracies are fractions of the 64 test images
        assert (64 * r["test"]).is_integer() and (64 * r["extrapolation"]).is_integer()
        assert f"{name} epoch 1/1: mean training loss" in result.stdout + result.stderr
    # "same size": parameter counts within 25% of each other
    sizes = [r["parameters"] for r in results.values()]
    assert max(sizes) < 1.25 * min(sizes)


def _moved_geometry(geometry, size, turns, mirror):
    """The geometry after ``turns`` quarter turns (torch.rot90 on rows/columns), then an
    optional left-right mirror: move the centres and the arrow direction as points and a vector."""
    g = geometry.clone()
    ax, ay, dx, dy = g[:, 0], g[:, 1], g[:, 5], g[:, 6]
    ux, uy = torch.cos(g[:, 2]), torch.sin(g[:, 2])
    for _ in range(turns):  # rot90 by one: new pixel (row i, col j) = old (row j, col size-1-i)
        ax, ay, dx, dy, ux, uy = ay, size - ax, dy, size - dx, uy, -ux
    if mirror:
        ax, dx, ux = size - ax, size - dx, -ux
    g[:, 0], g[:, 1], g[:, 5], g[:, 6], g[:, 2] = ax, ay, dx, dy, torch.atan2(uy, ux)
    return g


def test_dihedral_augmentation_is_the_moved_scene():
    example = _load_example()
    data = ArrowPointing(40, image_size=48, seed=11)
    images, labels = data.tensors()
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        state = generator.get_state()
        moved = example.dihedral(images, generator)
        # replay the draw to know which symmetry was applied
        replay = torch.Generator()
        replay.set_state(state)
        turns = int(torch.randint(4, (1,), generator=replay))
        mirror = bool(torch.randint(2, (1,), generator=replay))
        seen.add((turns, mirror))
        geometry = _moved_geometry(data.geometry, 48, turns, mirror)
        rendered = data.render(geometry).unsqueeze(1)
        # the same scene, up to pixels whose centre lies within rounding of an object's edge
        assert (rendered != moved).float().mean() < 1e-3
        # and the ray test on the moved geometry gives the same labels
        u = torch.stack([torch.cos(geometry[:, 2]), torch.sin(geometry[:, 2])], 1)
        d = geometry[:, [5, 6]] - geometry[:, [0, 1]]
        t = (d * u).sum(1)
        hit = (t > 0) & ((d - t[:, None] * u).norm(dim=1) <= geometry[:, 7])
        assert torch.equal(hit.long(), labels)
    assert len(seen) == 8


def test_patch_embedding_rejects_odd_patch():
    with pytest.raises(ValueError, match="even"):
        _load_example().PatchEmbedding(1, 16, 5)
