"""The records of a run's folded batches, kept in its run directory so that an interrupted run
resumes exactly. A command that keeps records (`geomlens.runner.command.Command.keeps_records`) keeps
them in ``run_dir/records``; the lifecycle deletes that folder once the run is marked ``done``
(the run directory holds results, not a cache) unless ``--keep-records``.

    log = RecordLog(run_dir / "records", types=(BatchRecord, CalibrationBatch))
    ranks.map(n_batches, compute, fold, log=log)   # replays 0..k-1, computes k..n-1

`geomlens.runner.sharding.Ranks.map` writes the record of batch i (``batch-000123.safetensors``,
`geomlens.runner.records`) once ``fold`` has taken it, to a temporary name renamed into place;
when the directory already holds the records of batches 0..k-1 (a run resumed with ``--resume``
or by `geomlens run`), it folds those from disk, in order, and computes only batches k, k+1, ...
The run's state after batch k-1 depends on those records alone (every random draw of a run is
made up front from its seed), so the resumed run's files equal an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from geomlens.rundir import atomic_write, to_jsonable
from geomlens.runner.records import RecordError, decode_record, encode_record
from geomlens.runner.sharding import to_cpu

logger = logging.getLogger(__name__)

RECORDS_DIR = "records"
"""The folder of a run directory that holds its batch records."""
SETTINGS = "settings.json"
"""The file of the folder that holds the choices the run made when it started (`setting`)."""

Fold = Callable[[int, Any], None]


@dataclass(frozen=True)
class RecordLog:
    """One folder of batch records; ``types``: the dataclasses a record may hold."""

    directory: Path
    types: tuple[type, ...] = ()
    inputs: str | None = None
    """What the records are computed from (`inputs_digest` of the tokens and settings): a
    folder that holds another call's records is refused instead of folded."""

    def path(self, i: int) -> Path:
        return Path(self.directory) / f"batch-{i:06d}.safetensors"

    def count(self, n: int) -> int:
        """How many batches, from batch 0 on without a gap (at most ``n``), have a record;
        a folder written from other inputs raises `RecordError`."""
        if self.inputs is not None and self.setting("inputs", self.inputs) != self.inputs:
            raise RecordError(f"cannot resume from {self.directory}: its records were computed "
                              "from other inputs (the text or a setting changed); use another "
                              "folder, or delete it to start over")
        done = 0
        while done < n and self.path(done).is_file():
            done += 1
        if done:
            logger.info("resuming: batches 0-%d of %d are read from %s", done - 1, n,
                        self.directory)
        return done

    def setting(self, name: str, value: Any) -> Any:
        """The value the run chose for ``name`` when it started (``settings.json``), else
        ``value``, stored for a resumed run: a choice that depends on the machine's state (the
        position chunk fitted to the free memory) must not change midway."""
        path = Path(self.directory) / SETTINGS
        try:
            stored = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError) as exc:
            raise RecordError(f"cannot read {path}: {exc}; delete the folder {self.directory} "
                              "to recompute every batch") from None
        if name not in stored:
            Path(self.directory).mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps({**stored, name: value}, indent=2, sort_keys=True))
            return value
        if stored[name] != value:
            logger.info("resuming with %s = %s, as the run started (now %s)", name,
                        stored[name], value)
        return stored[name]

    def read(self, i: int) -> Any:
        """Batch ``i``'s record (a damaged file raises `RecordError` naming it)."""
        return self.decode(i, self.path(i).read_bytes())

    def decode(self, i: int, data: bytes) -> Any:
        """The record in ``data``, the bytes of batch ``i``'s file (read on another rank)."""
        return decode_record(data, self.types, name=self.path(i))

    def replay(self, done: int, fold: Fold) -> None:
        """``fold(i, record i)`` for the stored records of batches 0..done-1, in order."""
        for i in range(done):
            fold(i, self.read(i))

    def keeping(self, fold: Fold) -> Fold:
        """``fold`` that then stores the record it took (encoded first: a fold may change it)."""
        Path(self.directory).mkdir(parents=True, exist_ok=True)

        def fold_and_keep(i: int, record: Any) -> None:
            data = encode_record(to_cpu(record))
            fold(i, record)
            atomic_write(self.path(i), data)

        return fold_and_keep

    def remove(self) -> None:
        """Delete the folder (the run directory holds results, not a cache)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def inputs_digest(*parts: Any) -> str:
    """A SHA-256 of what a call's records are computed from (`RecordLog.inputs`): tensors by
    dtype, shape and bytes, lists and tuples item by item, everything else as JSON."""
    digest = hashlib.sha256()
    _feed(digest, parts)
    return digest.hexdigest()


def _feed(digest, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        flat = obj.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor {flat.dtype} {tuple(obj.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, (list, tuple)):
        digest.update(f"list {len(obj)};".encode())
        for item in obj:
            _feed(digest, item)
    else:
        digest.update(json.dumps(to_jsonable(obj), sort_keys=True).encode() + b";")
