"""The `geomlens` command line. Every subcommand lives in `geomlens/commands/<name>.py` and
exposes ``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports
happen inside ``run`` so that ``geomlens --help`` stays fast.

Use ``main([...])`` from tests and notebooks exactly as the shell would.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from geomlens.errors import GeomlensError

#: subcommand name -> module. Add a command by adding a module and a line here.
COMMANDS: dict[str, str] = {
    "models": "geomlens.commands.models",
    "smoke": "geomlens.commands.smoke",
    "analyze": "geomlens.commands.analyze",
    "ablate": "geomlens.commands.ablate",
    "train": "geomlens.commands.train",
    "run": "geomlens.commands.run",
    "report": "geomlens.commands.report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geomlens",
        description="Transformers as movement through token-embedding space.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # command not implemented in this checkout
                continue
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(args: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 user error)."""
    parser = build_parser()
    ns = parser.parse_args(args)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(ns, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(ns._run(ns) or 0)
    except GeomlensError as exc:
        print(f"geomlens {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
