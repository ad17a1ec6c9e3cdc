"""examples/expressivity.py --quick runs, writes its plots and prints the expected findings."""


def test_expressivity_example(run_example, tmp_path):
    r = run_example("expressivity")
    out = r.stdout
    assert "mpnn cannot compute" in out and "ppgn computes" in out
    assert "forest invariants up to degree 4 equal: True; hom(triangle) = 0 vs 12" in out
    assert "all equal on the pair: True" in out
    assert "hom(K4): rook 192, Shrikhande 0" in out
    assert "degree 5 edge" in out  # the single degree-5 PPGN miss is listed
    for name in ("expressivity_table.png", "mpnn_misses_degree3.png", "ppgn_misses.png", "k4.png"):
        assert (tmp_path / name).stat().st_size > 3000, name
