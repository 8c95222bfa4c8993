"""Fused passes: plain torch functions run through ``torch.compile`` (inductor fuses their
element-wise work into few loops), with an eager fallback. The one place that compiles them.

`Fused` holds a mode and the compiled wrappers of the functions it has run:

    "compile"   always compiled; a compilation failure raises
    "eager"     never compiled (op by op: more passes, the same function)
    "auto"      compiled from ``min_elements`` entries up (below, a compiled call's launch and
                guard overhead outweighs the saved passes); the first compilation failure (no
                C++ compiler, an unsupported backend) switches this `Fused` to eager for good,
                with one warning

Inside a ``torch.compile`` trace a function runs as is: the outer compiler fuses it. The
owner of a `Fused` (an analysis run, an LM head) chooses its mode; nothing here is global.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Literal

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

Mode = Literal["auto", "compile", "eager"]
MODES: tuple[Mode, ...] = ("auto", "compile", "eager")


@contextmanager
def _untyped() -> Iterator[None]:
    """jaxtyping's runtime shape checks (on under pytest) cannot run inside a torch.compile
    trace: switch them off for the compiled call (the eager path is checked)."""
    try:
        from jaxtyping import config
    except ImportError:
        yield
        return
    before = config.jaxtyping_disable
    config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        config.update("jaxtyping_disable", before)


class Fused:
    """Runs functions compiled or eagerly (module docstring).

    Args:
        mode: ``"auto"``, ``"compile"``, ``"eager"``; True means ``"auto"``, False ``"eager"``.
        min_elements: ``"auto"`` compiles a call only from this many entries up (the caller
            passes ``n_elements``).
        fullgraph: compile each function as one graph (`torch.compile`'s flag).
        dynamic_rows: mark dim 0 of every 2-D tensor argument dynamic, so that one compiled
            variant serves every chunk size.
        recompile_limit: compiled variants allowed per function (dynamo's default is 8), set for
            the duration of the call only; for functions called with many combinations of
            optional inputs.
    """

    def __init__(self, mode: str | bool = "auto", *, min_elements: int = 0,
                 fullgraph: bool = False, dynamic_rows: bool = False,
                 recompile_limit: int | None = None) -> None:
        mode = {True: "auto", False: "eager"}.get(mode, mode) if isinstance(mode, bool) else mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode: Mode = mode
        self.min_elements, self.fullgraph = min_elements, fullgraph
        self.dynamic_rows, self.recompile_limit = dynamic_rows, recompile_limit
        self.failed = False
        self._compiled: dict[Callable, Callable] = {}

    @property
    def enabled(self) -> bool:
        """True while calls may run compiled (not eager, no failed compilation)."""
        return self.mode != "eager" and not self.failed

    def __call__(self, fn: Callable, *args, n_elements: int | None = None):
        """``fn(*args)``, compiled when the mode says so (``n_elements``: see ``min_elements``)."""
        if not self._compiles(n_elements):
            return fn(*args)
        compiled = self._compiled.get(fn)
        if compiled is None:
            compiled = self._compiled[fn] = torch.compile(
                fn, fullgraph=self.fullgraph, dynamic=False if self.dynamic_rows else None)
        if self.dynamic_rows:
            for a in args:
                if isinstance(a, Tensor) and a.dim() == 2 and a.shape[0] > 1:
                    torch._dynamo.maybe_mark_dynamic(a, 0)
        limit = (torch._dynamo.config.patch(recompile_limit=self.recompile_limit)
                 if self.recompile_limit else nullcontext())
        try:
            with _untyped(), limit:
                return compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, once
            if self.mode == "compile":
                raise
            self.failed = True
            logger.warning("torch.compile unavailable (%s: %s); running eagerly",
                           type(exc).__name__, exc)
            return fn(*args)

    def _compiles(self, n_elements: int | None) -> bool:
        if not self.enabled or torch.compiler.is_compiling():
            return False
        return self.mode == "compile" or n_elements is None or n_elements >= self.min_elements

    def __getstate__(self) -> dict:
        """Copies (deepcopy, pickle) keep the settings, not the compiled wrappers."""
        return {**self.__dict__, "_compiled": {}}

    def __repr__(self) -> str:
        return f"Fused(mode={self.mode!r}{', failed' if self.failed else ''})"
