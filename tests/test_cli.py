"""The everygraph CLI: expressivity table, explain, basis drawing, errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from everygraph.cli import main
from everygraph.contractions import basis

ROOT = Path(__file__).resolve().parents[1]


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


def run_console_script(*args: str) -> subprocess.CompletedProcess:
    """Run the installed ``everygraph`` console script (``python -m everygraph.cli`` only where
    the script is not on PATH), importing this checkout."""
    script = shutil.which("everygraph")
    command = [script] if script else [sys.executable, "-m", "everygraph.cli"]
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_console_script_prints_the_expressivity_counts():
    r = run_console_script("expressivity", "--degree", "4", "--models", "mpnn,ppgn")
    assert r.returncode == 0, r.stderr[-2000:]
    connected = r.stdout.split("whole basis")[0]
    rows = {}
    for line in connected.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0].isdigit():
            rows[int(parts[0]), parts[1]] = [tuple(map(int, c.split("/"))) for c in parts[2:]]
    assert len(rows) == 15
    # totals: connected graphs with d edges and distinct special vertices, counted by hand
    # (invariant: unlabelled connected graphs; node/edge: with one / an ordered pair marked).
    # MPNN computes exactly the forests: on connected patterns the trees with d edges, unrooted
    # for invariants (OEIS A000055: 1, 1, 1, 2, 3) and rooted for node outputs (A000081:
    # 1, 1, 2, 4, 9); PPGN computes every connected element up to degree 4.
    totals = {"invariant": [1, 1, 1, 3, 5], "node": [1, 1, 2, 5, 13], "edge": [0, 1, 3, 10, 35]}
    trees = {"invariant": [1, 1, 1, 2, 3], "node": [1, 1, 2, 4, 9]}
    for d in range(5):
        for output, total in totals.items():
            mpnn, ppgn = rows[d, output]
            assert mpnn[1] == ppgn[1] == ppgn[0] == total[d], (d, output)
            if output in trees:
                assert mpnn[0] == trees[output][d], (d, output)
    assert rows[2, "edge"][0] == (2, 3)  # the path a-b-c with output ac closes a cycle


def test_console_script_explains():
    r = run_console_script("explain", "ab,bc->ac", "--model", "mpnn")
    assert r.returncode == 0 and "mpnn cannot compute ab,bc->ac (edge, degree 2)" in r.stdout


def test_info_still_works(capsys):
    assert main(["info"]) == 0
    assert "everygraph" in capsys.readouterr().out


def test_console_script_prints_the_whole_hierarchy_by_default():
    """All five columns by default, counted pattern by pattern against independent references:
    forests for MPNN, the exhaustive ear-sequence search (tests/ned_reference.py) for the
    ear-decomposition classes (endpoint-shared / strong / almost-strong / any NED)."""
    import networkx as nx
    from ned_reference import brute_force_ned

    from everygraph.contractions.expressivity import is_paper_convention

    r = run_console_script("expressivity", "--degree", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    connected, whole = r.stdout.split("whole basis")
    header = [ln.split() for ln in connected.splitlines() if ln.startswith("degree")][0]
    models = ["mpnn", "subgraph", "local_2gnn", "local_2fgnn", "ppgn"]
    assert header == ["degree", "output", *models]
    kinds = {"subgraph": "endpoint_shared", "local_2gnn": "strong", "local_2fgnn": "almost_strong", "ppgn": "ned"}

    def reference(p, model):
        edges = frozenset(frozenset(e) for e in p.edges if e[0] != e[1])
        special = tuple(dict.fromkeys(p.special))
        if model == "mpnn":
            g = nx.Graph([tuple(e) for e in edges] + ([special] if len(special) == 2 else []))
            return nx.is_forest(g) if g.number_of_nodes() else True
        return brute_force_ned(edges, special, kinds[model])

    for text, convention in ((connected, True), (whole, False)):
        rows = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 7 and parts[0].isdigit():
                rows[int(parts[0]), parts[1]] = [tuple(map(int, c.split("/"))) for c in parts[2:]]
        assert len(rows) == 15
        for (d, output), cells in rows.items():
            pats = [p for p in basis(d, output) if is_paper_convention(p) or not convention]
            for model, (got, total) in zip(models, cells):
                assert total == len(pats)
                assert got == sum(reference(p, model) for p in pats), (d, output, model)



def test_models_select_and_order_the_columns(capsys):
    assert main(["expressivity", "--degree", "3", "--models", "local_2fgnn,mpnn", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["models"] == ["local_2fgnn", "mpnn"]
    assert all(row["computed"]["local_2fgnn"] == row["total"] for row in data["rows"])
    assert main(["explain", "ac,ad,bc,be,cd,ce->ab", "--model", "local_2gnn"]) == 0
    assert "no strong NED" in capsys.readouterr().out
    assert main(["explain", "ac,ad,bc,be,cd,ce->ab", "--model", "local_2fgnn"]) == 0
    out = capsys.readouterr().out
    assert "almost-strong NED" in out and "P1: a-c-e-b" in out
