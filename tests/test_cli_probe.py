"""``everygraph probe module:factory`` through the installed console script, on factories of
tests/cli_probe_factories.py whose separation power is known."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = shutil.which("everygraph")
    command = [script] if script else [sys.executable, "-m", "everygraph.cli"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
               MPLBACKEND="Agg", TQDM_DISABLE="1")
    return subprocess.run(command + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_probe_command_in_process(tmp_path, capsys, monkeypatch):
    from everygraph.cli import main

    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    args = ["probe", "cli_probe_factories:degree_histogram", "--pairs", "regular", "--degree", "4",
            "--permutations", "8", "--models", "mpnn,ppgn", "--json", "--seeds", "0,1"]
    assert main(args) == 0
    reports = json.loads(capsys.readouterr().out)
    assert len(reports) == 2
    for report in reports:
        assert report["model_classes"] == ["mpnn", "ppgn"] and report["degree"] == 4
        for row in report["rows"]:
            # regular pairs: 1-WL equivalent, so a degree-based model never separates them
            assert row["verdict"] == "does not separate" and row["theory"]["mpnn"] is False
            assert row["theory"]["ppgn"] is True
    assert main(["probe", "no_colon_here"]) == 2 and "module:function" in capsys.readouterr().err
    assert main(["probe", "cli_probe_factories:missing"]) == 2 and "missing" in capsys.readouterr().err
    assert main(["probe", "cli_probe_factories:closed_walks", "--pairs", "nope"]) == 2
    assert "families" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("everygraph") is None, reason="the console script is not installed")
def test_console_script_probes_a_model(tmp_path):
    common = ["--pairs", "regular", "--degree", "4", "--permutations", "8", "--models", "mpnn,ppgn"]
    counting = run_cli("probe", "cli_probe_factories:closed_walks", *common, "--linear-probe", "3",
                       "--plot", str(tmp_path / "lp.png"), cwd=tmp_path)
    assert counting.returncode == 0, counting.stderr[-2000:]
    out = counting.stdout
    lines = {line.split("  ")[0]: line for line in out.splitlines() if " vs " in line and "|" in line}
    assert len(lines) == 6
    for name, line in lines.items():  # every regular pair differs on hom(C3) or hom(C4): tr A^3, tr A^4
        theory, model = line.split("|")
        assert theory.split()[-2:] == ["no", "yes"] and model.split()[0] == "yes", line
    assert "linear probe" in out and (tmp_path / "lp.png").stat().st_size > 3000
    r2 = {line.split()[1]: line.split()[-2] for line in out.splitlines() if line.startswith("  ") and "->" in line}
    assert float(r2["ab,ac,bc->"]) > 0.99  # the model outputs hom(triangle) exactly
