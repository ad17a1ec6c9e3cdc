"""The layer rule of the design, enforced by reading the imports of every module.

Layers (imports point down only; a unit never imports a sibling of its own layer):

    rank 3  everygraph.cli, examples/           the faces
    rank 2  everygraph.nn, everygraph.transforms, everygraph.datasets
    rank 1  everygraph.sequence, everygraph.contractions   (the two engines)
    rank 0  everygraph.graphlib                             (the graph core)

The root module ``everygraph`` holds only metadata (``__version__``): anyone may read it, it
imports no subpackage. An import that crosses units must name the unit's package itself
(``from everygraph.graphlib import scatter`` or ``from ..graphlib import scatter``, never
``everygraph.graphlib.scatter``) and only names in that package's ``__all__``. Tests and
benchmarks may reach into internals on purpose (they check and time single executions), so
they are not scanned.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "everygraph"

RANKS = {
    "everygraph": -1,
    "graphlib": 0,
    "sequence": 1,
    "contractions": 1,
    "nn": 2,
    "transforms": 2,
    "datasets": 2,
    "cli": 3,
    "examples": 3,
}


def _exported(unit: str) -> set[str]:
    """The names in ``everygraph/<unit>/__init__.py``'s ``__all__`` (read without importing)."""
    tree = ast.parse((PACKAGE / unit / "__init__.py").read_text())
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == "__all__":
            return set(ast.literal_eval(node.value))
    raise AssertionError(f"everygraph/{unit}/__init__.py has no __all__")


def _module_name(path: Path) -> str:
    """Dotted name of a file: ``everygraph.nn.ppgn``, ``everygraph.nn`` (an ``__init__``), or
    ``examples.zinc_ppgn``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str | None:
    """The layer unit of a dotted module name, None outside everygraph and examples."""
    parts = module.split(".")
    if parts[0] == "examples":
        return "examples"
    if parts[0] != "everygraph":
        return None
    return parts[1] if len(parts) > 1 else "everygraph"


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import in ``source`` (the code of ``module``) that breaks the layer rule."""
    unit = _unit(module)
    found: list[str] = []

    def check(target: str, names: list[str], line: int) -> None:
        other = _unit(target)
        if other is None or other == unit:
            return
        if other not in RANKS:
            found.append(f"{module}:{line}: imports {target}, which belongs to no layer")
            return
        if other == "everygraph":
            return  # metadata (__version__), below every layer
        if RANKS[other] >= RANKS[unit]:
            relation = "a sibling" if RANKS[other] == RANKS[unit] else "a higher layer"
            found.append(f"{module}:{line}: {unit} (rank {RANKS[unit]}) imports {target}, {relation} (rank {RANKS[other]})")
            return
        if other == "cli":
            return
        if target != f"everygraph.{other}":
            found.append(f"{module}:{line}: imports {target}; import from everygraph.{other} itself (exported names only)")
            return
        private = sorted(set(names) - _exported(other))
        if private:
            found.append(f"{module}:{line}: imports {private} from everygraph.{other}, not in its __all__")

    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, [], node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if target == "everygraph":  # from everygraph import nn: a subpackage as a name
                subpackages = [n for n in names if n in RANKS and n != "everygraph"]
                for n in subpackages:
                    check(f"everygraph.{n}", [], node.lineno)
                names = [n for n in names if n not in subpackages]
                if not names:
                    continue
            check(target, names, node.lineno)
    return found


def _scanned_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "examples").glob("*.py"))


def test_every_subpackage_has_a_layer():
    units = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    units |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert units <= set(RANKS), f"place {sorted(units - set(RANKS))} in a layer of RANKS (and in the docs)"


@pytest.mark.parametrize("path", _scanned_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_and_use_exported_names(path: Path):
    module = _module_name(path)
    assert violations(path.read_text(), module, is_package=path.name == "__init__.py") == []


@pytest.mark.parametrize(
    "source, module, complaint",
    [
        ("from ..nn import PPGN", "everygraph.graphlib.dense", "a higher layer"),
        ("from everygraph.contractions import basis", "everygraph.sequence.plstm.scan", "a sibling"),
        ("from ...contractions import basis", "everygraph.sequence.plstm.scan", "a sibling"),
        ("from ..nn.polynomial_features import PolynomialFeatures", "everygraph.transforms.add", "a sibling"),
        ("import everygraph.cli", "everygraph.nn.ppgn", "a higher layer"),
        ("from everygraph.graphlib.orient import NODE_ORDERS", "everygraph.nn.plstm_graph", "itself"),
        ("from ...graphlib.scatter import check_index", "everygraph.nn.aggr.lcm", "itself"),
        ("from everygraph.graphlib import _kernel_index_add", "everygraph.nn.ppgn", "not in its __all__"),
        ("def f():\n    from ..graphlib import KERNELS", "everygraph.nn.ppgn", "not in its __all__"),
        ("from everygraph import nn", "everygraph.graphlib", "a higher layer"),
        ("from everygraph.nn.ppgn import PPGNBlock", "examples.zinc_ppgn", "itself"),
        ("from everygraph.cli import main", "everygraph.datasets.x", "a higher layer"),
    ],
)
def test_the_checker_catches_each_kind_of_violation(source, module, complaint):
    found = violations(source, module, is_package=module == "everygraph.graphlib")
    assert len(found) == 1 and complaint in found[0], found


@pytest.mark.parametrize(
    "source, module",
    [
        ("from ..graphlib import DAG, scatter", "everygraph.nn.ppgn"),
        ("from . import models\nfrom .models import KFWLDecider", "everygraph.contractions.expressivity"),
        ("from everygraph import __version__", "everygraph.cli"),
        ("from everygraph.nn import PPGN\nfrom everygraph.contractions import basis", "everygraph.cli"),
        ("import torch\nfrom torch_geometric.data import Data", "everygraph.graphlib.dag"),
        ("from everygraph.nn import PPGN\nfrom everygraph.datasets import rook_graph", "examples.zinc_ppgn"),
    ],
)
def test_the_checker_accepts_downward_exported_imports(source, module):
    assert violations(source, module, is_package=module.endswith("expressivity")) == []


# Each list is imported in order in one fresh interpreter: after importing a package, none of
# the packages named beside it may have been loaded (earlier entries are lower or siblings).
IMPORT_ORDERS = [
    [
        ("everygraph.graphlib", ["everygraph.sequence", "everygraph.contractions", "everygraph.nn",
                                 "everygraph.transforms", "everygraph.datasets", "everygraph.cli"]),
        ("everygraph.contractions", ["everygraph.sequence", "everygraph.nn", "everygraph.transforms"]),
        ("everygraph.transforms", ["everygraph.sequence", "everygraph.nn"]),
        ("everygraph.datasets", ["everygraph.sequence", "everygraph.nn"]),
    ],
    [("everygraph.sequence", ["everygraph.contractions", "everygraph.nn", "everygraph.transforms"])],
]


@pytest.mark.parametrize("order", IMPORT_ORDERS, ids=lambda o: o[0][0])
def test_importing_a_layer_loads_nothing_above_it(order):
    code = "import importlib, sys\n" + "".join(
        f"importlib.import_module({package!r})\n"
        f"print({package!r}, [m for m in {forbidden!r} if m in sys.modules])\n"
        for package, forbidden in order
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    for line in out.stdout.strip().splitlines():
        assert line.endswith(" []"), f"importing {line.split()[0]} also loaded {line.split(' ', 1)[1]}"


def test_transform_holds_no_module():
    import torch

    from everygraph.transforms import AddPolynomialFeatures

    transform = AddPolynomialFeatures(degree=3, outputs=("invariant",), select=["ab,bc,ca->"])
    assert not isinstance(transform, torch.nn.Module)
    assert not any(isinstance(v, torch.nn.Module) for v in vars(transform).values())


# The concepts every layer shares, each defined once in graphlib: the PyG batch -> dense pairs
# conversion, the check of offsets (ptr / cu_seqlens) and of segment ids, and the precision
# rule. A second definition elsewhere is a copy that will drift.
SHARED_IN_GRAPHLIB = {"to_dense_pairs", "check_ptr", "check_index", "ptr_from_batch", "compute_dtype", "upcast"}


def test_shared_concepts_are_defined_once_in_graphlib():
    where: dict[str, list[str]] = {name: [] for name in SHARED_IN_GRAPHLIB}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in where:
                where[node.name].append(str(path.relative_to(ROOT)))
    for name, files in where.items():
        assert len(files) == 1 and files[0].startswith("everygraph/graphlib/"), f"{name} defined in {files}"
