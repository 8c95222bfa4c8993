"""The `geomlens` command line; use ``main([...])`` from tests and notebooks as the shell would.

`MODULES` is the one list of commands: every research thread owns its commands in
``geomlens/<thread>/command.py`` (config, run function, headline, figures), and a new thread
is its own folder plus one word here. Two sorts of command (`geomlens.runner.command`):

* a **run command** (``analyze``, ``ablate``, ``train``, ...): its flags are generated from its
  dataclass config (`geomlens.config.flags`), it runs through the one lifecycle
  (`geomlens.runner.lifecycle.execute`) and prints its ``headline`` at the end;
* a **tool** (``models``, ``run``, ``report``, ...): it parses its own flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from geomlens.ablation import command as ablation
from geomlens.analysis import command as analysis
from geomlens.config.build import build_config
from geomlens.config.flags import add_config_arguments, namespace_values
from geomlens.kv import command as kv
from geomlens.models import command as models
from geomlens.projection import command as projection
from geomlens.rundir import is_done
from geomlens.runner import tools
from geomlens.runner.command import COMMANDS, Command, get_command, load_plugins, register
from geomlens.runner.errors import DEBUG_ENV, OneLineParser, explain, usage_error
from geomlens.runner.lifecycle import execute
from geomlens.runner.signals import interrupts_as_exceptions
from geomlens.training import command as training

#: every module that defines commands (its ``COMMANDS`` tuple), in ``--help`` order
MODULES = (models, analysis, ablation, training, kv, projection, tools)
for _module in MODULES:
    register(*_module.COMMANDS)


def run(command: str | Command, cfg: Any, out: str | Path, **kwargs) -> tuple[Path, dict]:
    """Run ``command`` (a name such as "analyze") on ``cfg`` into ``out``, exactly as the
    command line does; returns (the run directory used, the summary). See `execute`."""
    return execute(get_command(command) if isinstance(command, str) else command, cfg, out,
                   **kwargs)


def _populate(p: argparse.ArgumentParser, cmd) -> None:
    if not isinstance(cmd, Command):
        cmd.add_arguments(p)
        return
    add_config_arguments(p, cmd.config_cls)
    group = p.add_argument_group("run directory")
    group.add_argument("--out", default=f"runs/{cmd.name}", help=(
        "run directory; if it already holds a run, a fresh sibling (out-2, ...) is used "
        "(default: %(default)s)"))
    if cmd.resumable:
        group.add_argument("--resume", action="store_true", help=(
            "continue the unfinished run in --out from what it saved (train: its latest "
            "checkpoint; analyze, kv, ablate: their batch records); its config must match"))
    if cmd.keeps_records:
        group.add_argument("--keep-records", action="store_true", help=(
            "keep OUT/records (every batch's record, what an interrupted run resumes from) "
            "after the run is done; by default it is deleted then"))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own flags are built (all commands are listed)."""
    parser = OneLineParser(
        prog="geomlens", description="Transformers as movement through token-embedding space.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help=(
        f"show the full traceback of an error (for bug reports); also ${DEBUG_ENV}=1"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.descriptions().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _populate(p, COMMANDS[name])
    return parser


def run_command(cmd: Command, ns: argparse.Namespace) -> int:
    """Flags -> config -> the lifecycle -> the command's headline."""
    cfg = build_config(cmd.config_cls, namespace_values(ns, cmd.config_cls),
                       source_of=lambda key: "command line")
    resume = getattr(ns, "resume", False)
    if resume and is_done(ns.out):
        print(f"{ns.out} is already finished (delete its 'done' file to rerun).")
        return 0
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # torchrun: one dir for all ranks
    mode = "resume" if resume else ("error" if distributed else "new")
    is_main = int(os.environ.get("RANK", "0")) == 0
    run_dir, summary = execute(cmd, cfg, ns.out, mode=mode, is_main=is_main,
                               keep_records=getattr(ns, "keep_records", False))
    if is_main:
        print(cmd.headline(summary, Path(run_dir)))
        print(f"wrote {run_dir}")
    return 0


def _command_of(args: list[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    """Parse ``args``; KEY=VALUE words after a tool's flags join its overrides
    (``geomlens run CFG --dry-run out=x`` = ``geomlens run CFG out=x --dry-run``)."""
    ns, extra = parser.parse_known_args(args)
    if extra and isinstance(getattr(ns, "overrides", None), list) \
            and all("=" in e and not e.startswith("-") for e in extra):
        ns.overrides.extend(extra)
    elif extra:
        prog = f"{parser.prog} {ns.command}" if getattr(ns, "command", None) else parser.prog
        usage_error(prog, f"unrecognized arguments: {' '.join(extra)}")
    return ns


def main(args: list[str] | None = None) -> int:
    """Entry point; returns the exit code: 0 ok, 2 a user error (one line on stderr), 1 an
    internal error, 130 / 143 interrupted by Ctrl-C / SIGTERM. ``--debug`` anywhere (or
    ``GEOMLENS_DEBUG=1``) lets the traceback through instead."""
    args = sys.argv[1:] if args is None else list(args)
    debug = "--debug" in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    command = _command_of(args)
    with interrupts_as_exceptions():
        try:
            return _main(args, command)
        except BaseException as exc:  # noqa: BLE001  (one line per failure, see `explain`)
            if debug or isinstance(exc, SystemExit):
                raise
            message, code = explain(exc)
            if message:
                print(f"geomlens{' ' + command if command else ''}: {message}", file=sys.stderr)
            return code


def _main(args: list[str], command: str | None) -> int:
    load_plugins()
    parser = build_parser(command if command in COMMANDS else None)
    ns = _parse(parser, args)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not ns.command:
        parser.print_help()
        return 2
    cmd = COMMANDS[ns.command]
    if isinstance(cmd, Command):
        return run_command(cmd, ns)
    return int(cmd.run(ns) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
