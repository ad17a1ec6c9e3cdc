"""The everygraph CLI: expressivity table, explain, basis drawing, errors."""

import json
import subprocess
import sys


from everygraph.cli import main
from everygraph.contractions import basis


def test_expressivity_table_counts(capsys):
    assert main(["expressivity", "--degree", "5", "--models", "mpnn,ppgn", "--list-missing"]) == 0
    out = capsys.readouterr().out
    assert "connected patterns, distinct special vertices" in out
    # PPGN misses exactly one degree-5 element (edge output), listed as an einsum string
    line = [ln for ln in out.splitlines() if ln.strip().startswith("5  edge")][0]
    assert line.split()[-1] == "124/125"
    assert "ppgn, degree 5, edge (1): ac,ad,bc,bd,cd->ab" in out
    assert "mpnn, degree 3, invariant (1): ab,ac,bc->" in out


def test_expressivity_json_matches_basis(capsys):
    assert main(["expressivity", "--degree", "4", "--outputs", "node", "--models", "ppgn,3fwl", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["models"] == ["ppgn", "3fwl"]
    for row in data["rows"]:
        assert row["total"] == len(basis(row["degree"], "node"))
        assert row["computed"]["ppgn"] == row["total"]


def test_expressivity_plot(tmp_path, capsys):
    path = tmp_path / "t.png"
    assert main(["expressivity", "--degree", "4", "--plot", str(path)]) == 0
    assert path.stat().st_size > 5000


def test_explain(tmp_path, capsys):
    path = tmp_path / "e.png"
    assert main(["explain", "ab,bc,ca->", "--model", "ppgn", "--draw", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ppgn computes" in out and "matrix product" in out
    assert path.stat().st_size > 5000
    assert main(["explain", "ab,bc,ca->", "--model", "mpnn"]) == 0
    assert "cannot compute" in capsys.readouterr().out
    assert main(["explain", "ab,ac,ad,bc,bd,cd->", "--model", "3fwl"]) == 0
    assert "eliminate" in capsys.readouterr().out


def test_basis_draw(tmp_path, capsys):
    path = tmp_path / "b.png"
    assert main(["basis", "--degree", "3", "--output", "node", "--draw", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{len(basis(3, 'node'))} basis elements")
    assert path.stat().st_size > 10000


def test_errors(capsys):
    assert main(["expressivity", "--models", "mpnn,gin"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'gin'" in err and "ppgn" in err and "subgraph" in err
    assert main(["explain", "ab,bc->", "--model", "wl"]) == 2
    assert main(["explain", "ab,b!->"]) == 2
    assert "position" in capsys.readouterr().err
    assert main(["expressivity", "--degree", "10"]) == 2
    assert "Pass --yes" in capsys.readouterr().err
    assert main(["basis", "--degree", "6", "--domain", "general"]) == 2


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "everygraph.cli", "explain", "ab,bc->ac", "--model", "mpnn"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "cannot compute" in r.stdout


def test_info_still_works(capsys):
    assert main(["info"]) == 0
    assert "everygraph" in capsys.readouterr().out
