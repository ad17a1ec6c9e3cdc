"""The LCM second-minimum tutorial runs end to end in --quick mode and writes its plot and results."""

import json


def test_quick_run(run_example, tmp_path):
    result = run_example("lcm_second_minimum", "--no-progress", "--threads", "1", timeout=180)
    assert (tmp_path / "lcm_second_minimum.png").stat().st_size > 10_000
    summary = json.loads((tmp_path / "lcm_second_minimum.json").read_text())
    results = summary["results"]
    assert list(results) == ["sum", "max", "GRU", "PyG LCM", "ours"]
    for name, r in results.items():
        accuracy = {int(k): v for k, v in r["accuracy"].items()}
        assert sorted(accuracy) == [2, 8, 64]
        assert all(0.0 <= a <= 1.0 for a in accuracy.values())
        assert r["final_loss"] > 0 and r["parameters"] > 0
        assert f"{name}: {r['parameters']} parameters" in result.stdout
        # the printed table holds the same numbers
        assert f"| {name} | " + " | ".join(f"{accuracy[s]:.3f}" for s in sorted(accuracy)) + " |" in result.stdout
    # batch-independent aggregators score the same when another, larger set joins each batch
    for name in ("sum", "max", "ours"):
        assert results[name]["accuracy_with_companion_16"] == results[name]["accuracy"], name
    # even 20 steps beat chance (10%) on the training sizes for the monoid aggregators
    assert results["ours"]["accuracy"]["8"] > 0.2

