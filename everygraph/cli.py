"""The ``everygraph`` command line: ``everygraph info`` and the analysis tools."""

from __future__ import annotations

import argparse
import sys
from typing import Callable


def _info(args: argparse.Namespace) -> int:
    import networkx
    import opt_einsum
    import torch
    import torch_geometric

    from everygraph import __version__
    from everygraph.graphlib import scatter_backend_info

    print(f"everygraph       {__version__}")
    print(f"python           {sys.version.split()[0]}")
    print(f"torch            {torch.__version__}")
    print(f"torch_geometric  {torch_geometric.__version__}")
    print(f"opt_einsum       {opt_einsum.__version__}")
    print(f"networkx         {networkx.__version__}")
    print(f"scatter backend  {scatter_backend_info()}")
    print(f"threads          {torch.get_num_threads()}")
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    print(f"devices          {', '.join(devices)}")
    return 0


# ----------------------------------------------------------------------------- expressivity
_MAX_FAST_DEGREE = {"simple": 7, "symmetric": 4, "general": 3}
# roughly how many basis elements of all three outputs one more degree multiplies by
_GROWTH = {"simple": 4.5, "symmetric": 5.0, "general": 7.5}
_SIZE_AT_MAX = {"simple": 7700, "symmetric": 1600, "general": 7900}
_SECONDS_AT_MAX = {"simple": 10.0, "symmetric": 3.0, "general": 10.0}


def _check_degree(degree: int, domain: str, yes: bool) -> bool:
    """Warn (and refuse without --yes) before an enumeration that takes long."""
    limit = _MAX_FAST_DEGREE[domain]
    if degree <= limit:
        return True
    factor = _GROWTH[domain] ** (degree - limit)
    est_n = int(_SIZE_AT_MAX[domain] * factor)
    est_s = _SECONDS_AT_MAX[domain] * factor
    print(
        f"warning: degree {degree} in the {domain} domain enumerates roughly {est_n:,} basis elements "
        f"at degree {degree} alone (about {est_s:,.0f} s and growing ~{_GROWTH[domain]:.1f}x per degree); "
        f"degrees up to {limit} take seconds." + ("" if yes else " Pass --yes to proceed."),
        file=sys.stderr,
    )
    return yes


#: The columns of ``everygraph expressivity``: the strict hierarchy of Zhang et al. (ICLR 2024).
DEFAULT_MODELS = ("mpnn", "subgraph", "local_2gnn", "local_2fgnn", "ppgn")


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _expressivity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--degree", type=int, default=6, help="largest degree (number of pattern edges), default 6")
    p.add_argument("--min-degree", type=int, default=0, help="smallest degree tabulated, default 0")
    p.add_argument("--outputs", default="invariant,node,edge", help="comma-separated output types")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated models, default all of the hierarchy: mpnn, subgraph, local_2gnn, "
                        "local_2fgnn, ppgn (= 2fwl, ppgn++); also kfwl:<k> e.g. 3fwl")
    p.add_argument("--domain", default="simple", choices=["simple", "symmetric", "general"])
    p.add_argument("--list-missing", action="store_true", help="print every missed pattern as an einsum string")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the fraction each model computes")
    p.add_argument("--json", action="store_true", help="print the table as JSON instead of text")
    p.add_argument("--yes", action="store_true", help="proceed with a degree that takes long to enumerate")


def _expressivity(args: argparse.Namespace) -> int:
    from everygraph.contractions import analyze, get_model

    try:
        models = [get_model(m) for m in _split(args.models)]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.degree < 0 or args.min_degree < 0 or args.min_degree > args.degree:
        print(f"error: need 0 <= --min-degree <= --degree, got {args.min_degree} and {args.degree}", file=sys.stderr)
        return 2
    if not _check_degree(args.degree, args.domain, args.yes):
        return 2
    try:
        table = analyze(args.degree, outputs=_split(args.outputs), models=models, domain=args.domain,
                        min_degree=args.min_degree, progress=not args.json)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(table.to_json(indent=1))
    else:
        print(table.format(list_missing=args.list_missing))
    if args.plot:
        table.plot(args.plot)
        if not args.json:
            print(f"\nplot written to {args.plot}")
    return 0


def _explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", help='einsum-like pattern string, e.g. "ab,bc,ca->" (specials after ->)')
    p.add_argument("--model", default="ppgn",
                   help="mpnn, subgraph, local_2gnn, local_2fgnn, ppgn (= 2fwl, ppgn++), kfwl:<k> e.g. 3fwl")
    p.add_argument("--directed", action="store_true", help="read edges as ordered pairs (general inputs)")
    p.add_argument("--draw", metavar="FILE.png", help="draw the pattern and the certificate steps")


def _explain(args: argparse.Namespace) -> int:
    from everygraph.contractions import Pattern
    from everygraph.contractions import computable, get_model

    try:
        model = get_model(args.model)
        pattern = Pattern.from_string(args.pattern, directed=args.directed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # undirected strings keep the user's letters in the certificate
    verdict = computable(pattern if args.directed else args.pattern, model)
    print(verdict.explain())
    if args.draw:
        _draw_verdict(verdict, args.draw)
        print(f"\ndrawing written to {args.draw}")
    return 0


def _draw_verdict(verdict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from everygraph.contractions import draw_pattern

    lines = verdict.explain().splitlines()
    fig = plt.figure(figsize=(11, max(2.6, 0.32 * len(lines) + 0.8)))
    ax = fig.add_axes([0.0, 0.05, 0.24, 0.9])
    draw_pattern(verdict.pattern, ax)
    text_ax = fig.add_axes([0.26, 0.0, 0.74, 1.0])
    text_ax.axis("off")
    import textwrap

    wrapped = []
    for line in lines:
        wrapped += textwrap.wrap(line, 110, subsequent_indent="      ") or [""]
    text_ax.text(0.0, 0.97, "\n".join(wrapped), va="top", ha="left", family="monospace", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _basis_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--degree", type=int, default=3)
    p.add_argument("--output", default="node", choices=["invariant", "node", "edge"])
    p.add_argument("--domain", default="simple", choices=["simple", "symmetric", "general"])
    p.add_argument("--connected", action="store_true", help="connected patterns only")
    p.add_argument("--draw", metavar="FILE.png", help="grid of drawings (special vertices coloured)")
    p.add_argument("--yes", action="store_true", help="proceed with a degree that takes long to enumerate")


def _basis(args: argparse.Namespace) -> int:
    from everygraph.contractions import basis

    if args.degree < 0:
        print(f"error: --degree must be >= 0, got {args.degree}", file=sys.stderr)
        return 2
    if not _check_degree(args.degree, args.domain, args.yes):
        return 2
    pats = basis(args.degree, args.output, domain=args.domain, connected_only=args.connected)
    print(f"{len(pats)} basis elements: degree {args.degree}, {args.output} output, {args.domain} domain"
          + (", connected" if args.connected else ""))
    for p in pats:
        print(f"  {p}")
    if args.draw:
        from everygraph.contractions import draw_patterns

        draw_patterns(pats, args.draw, suptitle=f"degree {args.degree} {args.output} basis ({args.domain})")
        shown = min(len(pats), 400)
        print(f"drawing of {shown} pattern(s) written to {args.draw}")
    return 0


# ----------------------------------------------------------------------------- probe
def _probe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("factory", help="module:function returning the model (a callable on a PyG Batch returning "
                                   "graph embeddings [num_graphs, d]); the module is imported from the current folder "
                                   "or the Python path")
    p.add_argument("--pairs", default="regular,strongly_regular,cfi,single_pattern",
                   help="comma-separated pair families: regular, strongly_regular, cfi, single_pattern")
    p.add_argument("--degree", type=int, default=6, help="largest pattern size (edges) the theory checks, default 6")
    p.add_argument("--models", default=None,
                   help="comma-separated model classes for the theory columns (default: the available ones of "
                        "mpnn, subgraph, local_2gnn, local_2fgnn, ppgn, 3fwl)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds: the model is built once per seed "
                                                "(torch.manual_seed before the factory), default 0")
    p.add_argument("--permutations", type=int, default=32, help="relabellings per graph in the T^2 test, default 32")
    p.add_argument("--alpha", type=float, default=1e-3, help="level of the T^2 test, default 1e-3")
    p.add_argument("--linear-probe", type=int, metavar="DEGREE", default=None,
                   help="also fit the linear probe on patterns up to DEGREE edges (random graphs)")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the linear probe's R^2 (with --linear-probe)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")


def _load_factory(spec: str):
    import importlib
    import os

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"factory must be module:function, e.g. my_models:make_gin; got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"{module_name} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(f"{spec} is not callable")
    return factory


def _probe(args: argparse.Namespace) -> int:
    import json

    import torch

    from everygraph.contractions import available_model_classes, generate_pairs, linear_probe, probe_model

    try:
        factory = _load_factory(args.factory)
        seeds = [int(s) for s in _split(args.seeds)]
        if not seeds:
            raise ValueError("--seeds needs at least one seed")
        classes = available_model_classes(_split(args.models) if args.models else None)
        pairs = generate_pairs(_split(args.pairs))
    except (ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.degree < 1 or args.permutations < 4:
        print(f"error: need --degree >= 1 and --permutations >= 4, got {args.degree} and {args.permutations}",
              file=sys.stderr)
        return 2
    reports, probes = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        model = factory()
        name = f"{args.factory} (seed {seed})"
        report = probe_model(model, pairs=pairs, model_classes=classes, degree=args.degree,
                             num_permutations=args.permutations, alpha=args.alpha, seed=seed,
                             progress=not args.json, model_name=name)
        reports.append(report)
        if args.linear_probe is not None:
            probes.append(linear_probe(model, degree=args.linear_probe, seed=seed))
    if args.json:
        out = [r.to_dict() for r in reports]
        for entry, lp in zip(out, probes):
            entry["linear_probe_r2"] = lp.as_dict()
        print(json.dumps(out, indent=1))
    else:
        for i, report in enumerate(reports):
            print(report)
            if probes:
                print()
                print(probes[i])
            print()
        if len(reports) > 1:
            print(f"separated in how many of {len(reports)} seeds:")
            for k, row in enumerate(reports[0].rows):
                count = sum(r.rows[k].model_separates is True for r in reports)
                print(f"  {row.name:<32} {count}/{len(reports)}")
    if args.plot and probes:
        probes[0].plot(args.plot, title=f"linear probe of {args.factory} (seed {seeds[0]})",
                       model_classes=classes)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


# Each subcommand registers itself here: name -> (help, add_arguments, run).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "info": ("versions, scatter backend and devices", lambda p: None, _info),
    "expressivity": ("which GNN computes which equivariant polynomial: counts per degree, output and model",
                     _expressivity_args, _expressivity),
    "explain": ("can a model compute this pattern? the verdict with its certificate, step by step",
                _explain_args, _explain),
    "basis": ("list (and draw) the basis of equivariant polynomials of one degree", _basis_args, _basis),
    "probe": ("which graph pairs a model separates (reliable T^2 test), next to what each model class predicts",
              _probe_args, _probe),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="everygraph", description="everygraph: every structure is a graph.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
