"""The arrow-pointing tutorial: --quick trains both models above chance and writes its plot and
results, and its augmentation keeps labels (checked by re-rendering moved geometry)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from everygraph.datasets import ArrowPointing

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "arrow_pointing.py"


def test_quick_run(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--quick", "--no-progress", "--threads", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "arrow_pointing.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "arrow_pointing.json").read_text())
    settings = summary["settings"]
    assert settings["augment"] is True and settings["image_size"] == 24 and settings["object_scale"] == 0.5
    results = summary["results"]
    assert set(results) == {"pLSTM", "ViT"}
    for name, r in results.items():
        assert f"{name}: {r['parameters']} parameters" in result.stdout
        # accuracies are fractions of the 256 test images
        assert (256 * r["test"]).is_integer() and (256 * r["extrapolation"]).is_integer()
        assert f"accuracy {r['test']:.3f} at 24 px, {r['extrapolation']:.3f} at 48 px" in result.stdout
        # both models learn the task at the training size: seeds 0-4 of the quick run gave
        # pLSTM 0.715-0.770 and ViT 0.715-0.758; chance is 0.5 (a guess scores 0.65 on 256
        # balanced images with probability below 1e-6)
        assert r["test"] >= 0.65, (name, r["test"])
    # "same size": parameter counts within 25% of each other
    sizes = [r["parameters"] for r in results.values()]
    assert max(sizes) < 1.25 * min(sizes)


def test_object_sizes_scale_the_data_set_defaults(load_example):
    example = load_example("arrow_pointing")
    half = example.object_sizes(0.5)
    assert half == dict(arrow_length=(5.0, 8.0), arrow_width=(0.75, 1.25), disk_radius=(2.0, 3.5),
                        padding=2.0, gap=1.0, margin=0.5)
    # half-size objects fit a 24 px canvas; the default ones need 42 px
    ArrowPointing(4, 24, **half)
    with pytest.raises(ValueError, match="too small"):
        ArrowPointing(4, 24)


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


def test_dihedral_augmentation_is_the_moved_scene(load_example):
    example = load_example("arrow_pointing")
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


def test_patch_embedding_rejects_odd_patch(load_example):
    with pytest.raises(ValueError, match="even"):
        load_example("arrow_pointing").PatchEmbedding(1, 16, 5)
