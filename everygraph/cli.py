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


# Each subcommand registers itself here: name -> (help, add_arguments, run).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "info": ("versions, scatter backend and devices", lambda p: None, _info),
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
