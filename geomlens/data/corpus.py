"""The bundled real-text corpus (vendored from shared/data/corpus; see data/corpus/DATA.md).

Splits:
    eval       5 domains x 300 segments (40-256 words), one row per segment
    train_cpu  4.0 MB of documents, disjoint from eval, one row per document
    train_gpu  12.7 MB of documents, disjoint from eval, one row per document
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

from geomlens.errors import InputError

if TYPE_CHECKING:
    from datasets import Dataset

CORPUS_DIR = Path(__file__).parent / "corpus"
DOMAINS: tuple[str, ...] = ("news", "encyclopedic", "fiction", "technical", "computing_lexicon")
Split = Literal["eval", "train_cpu", "train_gpu"]


def _read_bytes(path: Path) -> bytes:
    """The file's bytes (gunzipped for ``.gz``); anything but a readable regular file (or a
    ``.gz`` that is not gzip) raises `InputError` saying what to give instead."""
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a .txt, .txt.gz or .jsonl file")
    if path.exists() and not path.is_file():
        raise InputError(f"{path} is not a regular file (a FIFO, device or socket would be read "
                         "forever or not at all); save the text to a file and give that")
    try:
        if path.suffix != ".gz":
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(f"{path} ends in .gz but is not a complete gzip file ({exc}); "
                         "compress it with gzip, or drop the .gz suffix") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read: {exc.strerror or exc}") from None


def read_text_file(path: Path) -> str:
    """The whole file as text; a file that is not UTF-8 raises `InputError` naming the byte."""
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "re-encode the file as UTF-8"
        ) from None


def _jsonl_row(line: str, where: str, i: int, path: Path, domain: str | None) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{where}: malformed JSON ({exc.msg}); each line must be an object like "
            '{"text": "...", "domain": "...", "id": "..."} (only "text" is required)'
        ) from None
    if not isinstance(row, dict) or "text" not in row:
        raise InputError(f"{where}: no 'text' key; each JSON line needs a 'text' string")
    if not isinstance(row["text"], str):
        raise InputError(f"{where}: 'text' must be a string, got {type(row['text']).__name__}")
    for key in ("text", "domain", "id"):
        _check_unicode(row.get(key), f"{where}: {key!r}")
    return {"domain": str(row.get("domain", domain or path.stem)),
            "id": str(row.get("id", f"{path.stem}-{i}")), "text": row["text"]}


def _check_unicode(value: object, where: str) -> None:
    """JSON can escape a lone surrogate (``"\\ud800"``), which is not text: no tokenizer or
    file can take it."""
    if not isinstance(value, str):
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{where} holds a lone surrogate (\\u{ord(value[exc.start]):04x} at "
                         f"character {exc.start}), which is not valid Unicode; fix the escape "
                         "(a pair such as \\ud83d\\ude00, or the character itself)") from None


def _read_jsonl(path: Path, domain: str | None = None) -> list[dict]:
    lines = read_text_file(path).split("\n")
    return [_jsonl_row(line, f"{path}, line {i + 1}", i, path, domain)
            for i, line in enumerate(lines) if line.strip()]


def _read_documents(path: Path, domain: str) -> list[dict]:
    docs = [d.strip() for d in read_text_file(path).split("\n\n")]
    return [{"domain": domain, "id": f"{domain}-{i}", "text": d} for i, d in enumerate(docs) if d]


def _as_list(domain: str | Sequence[str] | None) -> list[str] | None:
    if domain is None:
        return None
    if isinstance(domain, str):
        return [d for d in domain.split(",") if d]
    return list(domain)


def load_corpus(
    domain: str | Sequence[str] | None = None,
    split: Split = "eval",
    *,
    path: str | Path | None = None,
    n_segments: int | None = None,
) -> "Dataset":
    """Load text segments as a `datasets.Dataset` with columns ``domain``, ``id``, ``text``.

    Args:
        domain: one domain, a list, a comma-separated string, or None for all five.
            Applies to the bundled ``eval`` split.
        split: ``"eval"``, ``"train_cpu"`` or ``"train_gpu"`` (bundled files).
        path: instead of the bundled corpus, a local ``.txt`` (documents separated by blank
            lines), ``.txt.gz`` or ``.jsonl`` file (one ``{"text": ...}`` per line), or a
            Hugging Face dataset name (needs hub access; column ``text``).
        n_segments: keep at most this many segments *per domain* (first ones, file order).
    """
    if path is not None:
        p = Path(path)
        if p.exists():
            rows = _read_jsonl(p) if p.suffix == ".jsonl" else _read_documents(p, p.name.split(".")[0])
        elif str(path).endswith((".jsonl", ".txt", ".gz")):
            raise InputError(f"Text file {path} does not exist.")
        else:
            rows = _load_hf_dataset(str(path))
    elif split == "eval":
        wanted = _as_list(domain) or list(DOMAINS)
        unknown = [d for d in wanted if d not in DOMAINS]
        if unknown:
            raise InputError(f"Unknown domain(s) {unknown}. Available: {', '.join(DOMAINS)}")
        rows = [r for d in wanted for r in _read_jsonl(CORPUS_DIR / "eval" / f"{d}.jsonl", d)]
    elif split in ("train_cpu", "train_gpu"):
        rows = _read_documents(CORPUS_DIR / f"{split}.txt.gz", split)
    else:
        raise InputError(f"Unknown split {split!r}; use 'eval', 'train_cpu' or 'train_gpu'.")
    if n_segments is not None:
        kept: dict[str, int] = {}
        out = []
        for r in rows:
            if kept.get(r["domain"], 0) < n_segments:
                kept[r["domain"]] = kept.get(r["domain"], 0) + 1
                out.append(r)
        rows = out
    if not rows:
        raise InputError("No text segments were loaded (empty file or filter).")
    from datasets import Dataset

    return Dataset.from_list(rows)


def _load_hf_dataset(name: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as exc:  # noqa: BLE001 - hub/network errors come in many types
        raise InputError(
            f"Could not load {name!r}: not a local file, and the Hugging Face hub could not "
            f"provide it ({type(exc).__name__}). Offline, pass a local .txt/.jsonl path or use "
            f"the bundled domains: {', '.join(DOMAINS)}."
        ) from None
    return [{"domain": name, "id": f"{name}-{i}", "text": t} for i, t in enumerate(ds["text"])]
