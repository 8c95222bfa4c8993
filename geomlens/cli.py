"""The `geomlens` command line; use ``main([...])`` from tests and notebooks as the shell would.

Two sorts of command, both registered in `COMMANDS` (the single list of commands):

* a **run-kind command** (``analyze``, ``ablate``, ``train``, ...): its module names ``KIND``,
  its flags are generated from the kind's dataclass config (`geomlens.config.flags`), and it
  runs through the one lifecycle (`geomlens.runner.lifecycle.execute`); the module's
  ``headline(summary, run_dir)`` returns the few lines printed at the end;
* a **tool command** (``models``, ``run``, ``report``, ...): its module has
  ``add_arguments(parser)`` and ``run(args) -> int``.

Only the chosen command's module and config are imported, so ``geomlens --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from geomlens.errors import GeomlensError
from geomlens.registry import Registry

#: command name -> module. Add a command with a module and one `register` line here.
COMMANDS: Registry[str] = Registry("command")
COMMANDS.register("models", "geomlens.commands.models", help="list the model zoo (offline models, micro sizes)")
COMMANDS.register("smoke", "geomlens.commands.smoke", help="load a model and print its top next tokens per domain")
COMMANDS.register("analyze", "geomlens.commands.analyze", help=(
    "distance vs probability (Table 6.1): NDCG@k, JSD, Spearman, top-k; bootstrap CIs, controls"))
COMMANDS.register("ablate", "geomlens.commands.ablate", help=(
    "zero/mean/resample ablation of attention/MLP outputs: delta loss and delta NDCG@k"))
COMMANDS.register("train", "geomlens.commands.train", help=(
    "train a micro-LLaMA with a KNN / kernel / linear LM head (resumable)"))
COMMANDS.register("kv", "geomlens.commands.kv", help=(
    "first-layer-only K/V on a pretrained model: clean vs patched loss, layer sweeps"))
COMMANDS.register("project", "geomlens.commands.project", help=(
    "project attention/MLP parameters onto the vocabulary (Dar et al. 2022), no forward pass"))
COMMANDS.register("align", "geomlens.commands.align", help=(
    "align two models that share a vocabulary in embedding space (layers and neurons)"))
COMMANDS.register("run", "geomlens.commands.run", help=(
    "run an experiment config (YAML) and its sweep; finished points are skipped"))
COMMANDS.register("report", "geomlens.commands.report", help=(
    "one table (mean ± std over seeds, or CIs) from many run directories"))


def _populate(p: argparse.ArgumentParser, module) -> None:
    if not hasattr(module, "KIND"):
        module.add_arguments(p)
        return
    from geomlens.config.flags import add_config_arguments
    from geomlens.runner.kinds import get_run_kind

    kind = get_run_kind(module.KIND)
    add_config_arguments(p, kind.config_cls)
    run = p.add_argument_group("run directory")
    run.add_argument("--out", default=f"runs/{module.KIND}", help=(
        "run directory; if it already holds a run, a fresh sibling (out-2, ...) is used "
        "(default: %(default)s)"))
    if kind.resumable:
        run.add_argument("--resume", action="store_true", help=(
            "continue the run in --out from its latest checkpoint (its config must match)"))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own flags are built (all commands are listed)."""
    parser = argparse.ArgumentParser(
        prog="geomlens", description="Transformers as movement through token-embedding space.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.descriptions().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _populate(p, importlib.import_module(COMMANDS[name]))
    return parser


def run_kind_command(module, ns: argparse.Namespace) -> int:
    """Flags -> config -> the lifecycle -> the command's headline."""
    from geomlens.config.build import build_config
    from geomlens.config.flags import namespace_values
    from geomlens.runner.kinds import get_run_kind
    from geomlens.runner.lifecycle import execute
    from geomlens.rundir import is_done

    kind = get_run_kind(module.KIND)
    cfg = build_config(kind.config_cls, namespace_values(ns, kind.config_cls),
                       source_of=lambda key: "command line")
    resume = getattr(ns, "resume", False)
    if resume and is_done(ns.out):
        print(f"{ns.out} is already finished (delete its 'done' file to rerun).")
        return 0
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # torchrun: one dir for all ranks
    mode = "resume" if resume else ("error" if distributed else "new")
    is_main = int(os.environ.get("RANK", "0")) == 0
    run_dir, summary = execute(kind, cfg, ns.out, mode=mode, is_main=is_main)
    if is_main:
        print(module.headline(summary, Path(run_dir)))
        print(f"wrote {run_dir}")
    return 0


def _command_of(args: list[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def main(args: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 user error)."""
    args = sys.argv[1:] if args is None else list(args)
    command = _command_of(args)
    parser = build_parser(command if command in COMMANDS else None)
    ns = parser.parse_args(args)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not ns.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[ns.command])
    try:
        if hasattr(module, "KIND"):
            return run_kind_command(module, ns)
        return int(module.run(ns) or 0)
    except GeomlensError as exc:
        message = " ".join(str(exc).split()) if "\n" not in str(exc).strip() else str(exc).strip()
        print(f"geomlens {ns.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
