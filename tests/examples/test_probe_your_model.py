"""examples/probe_your_model.py --quick: three untrained models follow the theory's columns.

Guarantees checked (they hold for any weights): GIN (an MPNN) separates no pair that no forest
pattern separates; no model here (all at most as strong as 2-FWL) separates a strongly regular
pair or a CFI pair over a treewidth-3 base. Thresholds the quick run reaches with its fixed
seed: every separation the mpnn column predicts, and at least 90 % of the subgraph and ppgn
columns' predictions, are realised by GIN, the subgraph GIN and PPGN (with --seed 1 and 2 as
well, all of them were: 5 of 5, 18 of 18 and 18 of 18)."""

import json


def test_probe_your_model_quick(run_example, tmp_path):
    r = run_example("probe_your_model", "--no-progress")
    summary = json.loads((tmp_path / "probe_your_model.json").read_text())
    models = summary["models"]
    assert set(models) == {"GIN", "subgraph GIN", "PPGN"}
    assert {"mpnn", "subgraph", "ppgn", "3fwl"} <= set(summary["settings"]["model_classes"])
    for name, entry in models.items():
        rows = entry["report"]["rows"]
        assert len(rows) >= 18 and sum(row["family"] == "strongly regular" for row in rows) >= 2
        assert all(row["verdict"] != "unreliable" for row in rows), name
        for row in rows:
            two_fwl_equivalent = row["family"] == "strongly regular" or row["pair"] in ("CFI(K4)", "CFI(K3,3)")
            if two_fwl_equivalent:
                assert row["theory"]["ppgn"] is False
                assert row["verdict"] == "does not separate", (name, row["pair"])
        column = entry["model_class"]
        predicted = [row for row in rows if row["theory"][column]]
        realised = [row for row in predicted if row["verdict"] == "separates"]
        assert predicted and len(realised) >= 0.9 * len(predicted), (name, len(realised), len(predicted))
        assert entry["agreement"]["model_only"] == 0, name
        assert all(-10 < v < 1.0001 for v in entry["linear_probe_r2"].values() if v == v)
    gin = models["GIN"]["report"]["rows"]
    for row in gin:
        assert (row["verdict"] == "separates") == row["theory"]["mpnn"], row["pair"]
    assert "GIN against the mpnn column" in r.stdout and "PPGN against the ppgn column" in r.stdout
    assert (tmp_path / "probe_linear.png").stat().st_size > 10_000
