"""`TextSource`: the one text-source group of every command that reads text.

Its fields (``--domains`` | ``--texts FILE``, ``--n-segments``, ``--max-tokens``, ``--overflow``)
are inherited by every config that reads text (analyze, ablate, kv, ...), so they have one
definition, one set of flags and one loader, `load_segments`. `check_text_source` reads and
checks the text before a run directory exists (a bad file fails with a one-line error and
leaves nothing behind).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geomlens.config.base import Config, choices
from geomlens.data.batching import tokenize_segments
from geomlens.data.corpus import load_corpus
from geomlens.data.token_map import token_map
from geomlens.errors import InputError

TEXT_SOURCE = "text source"
OVERFLOWS = ("truncate", "window")
#: segments per domain read from the bundled corpus when --n-segments is not given (every
#: command); a --texts file is read whole unless --n-segments caps it
BUNDLED_SEGMENTS = 20

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TextSource(Config):
    """Which text a command reads and how it is cut into token sequences."""

    domains: list[str] | None = field(
        default=None, metadata={"group": TEXT_SOURCE, "exclusive": True,
                                **choices("geomlens.data.corpus:DOMAINS")})
    """Bundled eval domains to read (None = all five)."""
    texts: str | None = field(default=None, metadata={"group": TEXT_SOURCE, "exclusive": True})
    """A local UTF-8 .jsonl file (one {"text": ...} object per line; "domain" and "id" optional)
    or .txt file (segments separated by blank lines) instead of the bundled corpus."""
    n_segments: int | None = field(default=None, metadata={"group": TEXT_SOURCE})
    """Segments per domain, the first ones in file order. Unset: a --texts file is read whole,
    the bundled corpus gives its first 20 per domain (it has 300; --n-segments 300 reads all)."""
    max_tokens: int = field(default=128, metadata={"group": TEXT_SOURCE})
    """Tokens per sequence; longer segments are cut as ``overflow`` says (≤ the model's n_ctx)."""
    overflow: str = field(default="truncate", metadata={"group": TEXT_SOURCE, **choices(OVERFLOWS)})
    """Tokens past max_tokens: "truncate" keeps the first max_tokens, "window" splits the
    segment into consecutive windows of max_tokens."""

    def validate(self) -> None:
        if self.domains is not None and self.texts is not None:
            raise InputError("give --domains or --texts, not both")
        if self.n_segments is not None and self.n_segments < 1:
            raise InputError(f"--n-segments must be >= 1 (or none for all), got {self.n_segments}")
        if self.max_tokens < 2:
            raise InputError(f"--max-tokens must be >= 2 (a next-token loss needs 2), got {self.max_tokens}")


def segments_per_domain(source: TextSource) -> int | None:
    """The cap on segments per domain: --n-segments if given, else none for a --texts file
    and `BUNDLED_SEGMENTS` for the bundled corpus."""
    if source.n_segments is not None:
        return source.n_segments
    return None if source.texts is not None else BUNDLED_SEGMENTS


def read_rows(source: TextSource):
    """The selected segments as a `datasets.Dataset` (columns domain, id, text); a cap that
    cuts a --texts file says so in one warning line."""
    cap = segments_per_domain(source)
    rows = load_corpus(source.domains, "eval", path=source.texts, n_segments=cap)
    if source.texts is not None and cap is not None:
        whole = Counter(load_corpus(None, "eval", path=source.texts)["domain"])
        if sum(whole.values()) > len(rows):
            logger.warning("--n-segments %d keeps %d of the %d segments of %s (first %d per "
                           "domain, file order)", cap, len(rows), sum(whole.values()),
                           source.texts, cap)
    return rows


def check_text_source(source: TextSource, *, n_ctx: int | None = None) -> None:
    """Read and check the text (file exists, UTF-8, JSONL well formed, non-empty segments) and
    max_tokens against the model's context, before any run directory is created."""
    if source.texts is not None and not Path(source.texts).exists():
        raise InputError(f"--texts {source.texts}: no such file")
    rows = read_rows(source)
    empty = [r["id"] for r in rows if not r["text"].strip()]
    if empty:
        where = source.texts or "the corpus"
        raise InputError(f"{where}: segment {empty[0]!r} is empty; every segment needs text")
    if n_ctx is not None and source.max_tokens > n_ctx:
        raise InputError(
            f"--max-tokens {source.max_tokens} exceeds the model's context of {n_ctx} tokens; "
            "use --max-tokens <= n_ctx (longer text is cut as --overflow says)"
        )


#: segments longer than this (in characters) hold at least 2 tokens in any tokenizer we load
_SHORT_CHARS = 256


def _too_short(row: dict, source: TextSource) -> str:
    where = source.texts or "the corpus"
    return (f"{where}: segment {row['id']!r} ({row['text'][:40]!r}) is a single token; a "
            "next-token prediction needs at least 2: remove it or join it to its neighbour")


def check_segment_tokens(source: TextSource, tokenizer) -> None:
    """Every segment holds at least 2 tokens (checked before a run directory exists; only the
    short segments are tokenized)."""
    for row in read_rows(source):
        text = row["text"]
        if len(text) <= _SHORT_CHARS and len(tokenizer(text)["input_ids"]) < 2:
            raise InputError(_too_short(row, source))


def load_segments(source: TextSource, tokenizer) -> tuple[list[Any], list[str], list[str]]:
    """Tokenize the selected text: (token sequences, segment ids, domains), one per sequence.

    A segment longer than ``max_tokens`` becomes one sequence ("truncate") or several with ids
    ``id#0, id#1, ...`` ("window"). Tokens as the model's own tokenizer makes them (no BOS is
    added where the tokenizer adds none).
    """
    seqs, ids, domains, cut = [], [], [], 0
    for row in read_rows(source):
        pieces = tokenize_segments(tokenizer, [row["text"]], max_tokens=source.max_tokens,
                                   overflow=source.overflow)
        if source.overflow == "truncate" and source.texts is not None:
            cut += len(tokenizer(row["text"])["input_ids"]) > source.max_tokens
        if not pieces:
            raise InputError(_too_short(row, source))
        for j, piece in enumerate(pieces):
            seqs.append(piece)
            ids.append(row["id"] if len(pieces) == 1 else f"{row['id']}#{j}")
            domains.append(row["domain"])
    if cut:
        logger.warning("%d segment(s) of %s are longer than --max-tokens %d and were cut to their "
                       "first %d tokens (--overflow window keeps every token)", cut, source.texts,
                       source.max_tokens, source.max_tokens)
    return seqs, ids, domains


def load_model_segments(source: TextSource, model) -> tuple[list[Any], list[str], list[str]]:
    """`load_segments` for ``model``: its tokenizer, and token ids in the model's own ids.

    A model trained with a reduced vocabulary (`geomlens.data.token_map`) has no
    ``model.tokenizer``; its `TokenMap` holds the tokenizer, and tokens outside the kept
    vocabulary become the run's OOV id, exactly as the trainer mapped its data."""
    tm = token_map(model)
    if tm.tokenizer is None:
        raise InputError("The model has no tokenizer; this command tokenizes corpus text.")
    seqs, ids, domains = load_segments(source, tm.tokenizer)
    if tm.kept is not None:
        seqs = [tm.from_original(seq) for seq in seqs]
    return seqs, ids, domains


def text_field(name: str, default: Any) -> Any:
    """A `TextSource` field with another default, for a config that inherits the group
    (``n_segments: int | None = text_field("n_segments", 20)``); help and metadata stay shared."""
    import dataclasses

    original = {f.name: f for f in dataclasses.fields(TextSource)}[name]
    return field(default=default, metadata=original.metadata)
