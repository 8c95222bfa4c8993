"""A notebook call's config and segments: ``f(model, cfg | texts, texts=..., **overrides)``.

The notebook functions of the threads (`geomlens.analyze`, `geomlens.ablate`,
`geomlens.kv_losses`) take the same arguments, resolved here once:

    f(model, ["a text", "another"])          # the texts themselves: one segment each
    f(model, texts="The capital of France")  # one text (or token ids, see `as_sequences`)
    f(model, cfg, n_segments=4)              # the config's text source (bundled corpus, --texts)
    f(model, texts="my.jsonl")               # a file: the config's ``texts`` field (``--texts``)

Texts become segments "0", "1", ... in the domain "text", each whole unless ``max_tokens=`` is
given (then longer ones are cut, with one warning line). ``overrides`` replace the config's
fields and are validated like CLI flags (`geomlens.config.build_config`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import Tensor

from geomlens.config.build import build_config
from geomlens.data.inputs import as_sequences
from geomlens.data.source import load_model_segments

#: the domain of segments given as texts
TEXT_DOMAIN = "text"


def _is_file(texts: Any) -> bool:
    return isinstance(texts, (str, Path)) and (str(texts).endswith(".jsonl") or Path(texts).is_file())


def config_and_segments(
    model: Any, config_cls: type, cfg: Any = None, texts: Any = None, *, where: str,
    **overrides: Any,
) -> tuple[Any, list[Tensor], list[str], list[str]]:
    """``(cfg, seqs, segment_ids, domains)`` for a notebook call (module docstring).

    Args:
        model: the HookedTransformer that reads the text (its tokenizer).
        config_cls: the thread's dataclass config (`geomlens.data.source.TextSource` fields).
        cfg: a ``config_cls`` (None = its defaults), or the texts in place of ``texts``.
        texts: a text, a list of texts or token ids (`as_sequences`), or a .jsonl/.txt path.
        where: the caller's name, for error messages.
        overrides: field values that replace ``cfg``'s.
    """
    if cfg is not None and not isinstance(cfg, config_cls):
        if texts is not None:
            raise TypeError(f"{where}: give the texts once (as the second argument or texts=)")
        cfg, texts = None, cfg
    if texts is not None and _is_file(texts):
        overrides["texts"], texts = str(texts), None
    base = {} if cfg is None else {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    cfg = build_config(config_cls, {**base, **overrides})
    if texts is None:
        seqs, ids, domains = load_model_segments(cfg, model)
        return cfg, seqs, ids, domains
    cap = cfg.max_tokens if "max_tokens" in overrides else None
    seqs = as_sequences(model, texts, where=where, max_tokens=cap)
    return cfg, seqs, [str(i) for i in range(len(seqs))], [TEXT_DOMAIN] * len(seqs)
