"""examples/expressivity.py --quick runs, writes its plots and prints the expected findings."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_expressivity_example(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "expressivity.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "mpnn cannot compute" in out and "ppgn computes" in out
    assert "forest invariants up to degree 4 equal: True; hom(triangle) = 0 vs 12" in out
    assert "all equal on the pair: True" in out
    assert "hom(K4): rook 192, Shrikhande 0" in out
    assert "degree 5 edge" in out  # the single degree-5 PPGN miss is listed
    for name in ("expressivity_table.png", "mpnn_misses_degree3.png", "ppgn_misses.png", "k4.png"):
        assert (tmp_path / name).stat().st_size > 3000, name
