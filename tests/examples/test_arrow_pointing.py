"""The arrow-pointing tutorial runs end to end in --quick mode and writes its plot and results."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "arrow_pointing.py"


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
    results = summary["results"]
    assert set(results) == {"pLSTM", "ViT"}
    for name, r in results.items():
        assert 0.0 <= r["test"] <= 1.0 and 0.0 <= r["extrapolation"] <= 1.0
        assert f"{name}: {r['parameters']} parameters" in result.stdout
    # "same size": parameter counts within 25% of each other
    sizes = [r["parameters"] for r in results.values()]
    assert max(sizes) < 1.25 * min(sizes)
