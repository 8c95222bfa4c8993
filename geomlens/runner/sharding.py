"""Batches split over the ranks of a torchrun launch, their results folded in batch order.

    ranks = Ranks.start(device)           # one rank when not launched by torchrun
    with ranks.together():                # an error on any rank stops every rank
        chunk = ranks.agree_min(chunk)    # one value all ranks use
        ranks.map(n_batches, compute, fold)

``compute(i)`` runs on rank ``i % world_size`` and returns the batch's record; ``fold(i,
record)`` runs on rank 0 (on every rank with ``to_all=True``) for i = 0, 1, 2, ... in order.

Exactness: each batch is computed whole by one rank (the same tokens and shapes as in a single
process) and rank 0 folds the records in batch order with the single-process code, so every
sum, statistic and file equals a single-process run's. In one process `Ranks.map` is just
``fold(i, compute(i))`` for every i.

Rounds: in round r rank k computes batch ``r·W + k``; the ranks then exchange their status (ok
or failed) and the records go to rank 0, which folds them before the next round. Records
cross processes as CPU data, pickled by the computing rank inside its error handling, so rank 0
holds at most W records at a time. Rounds start at the round's first batch: ``first, first + 1,
...`` for ``first = k, k + W, ...``.

Resume: with a `RecordLog` (``log=``, `geomlens.runner.record_log`) rank 0 counts the stored
records of batches 0..k-1, every rank learns k (`Ranks.from_main`), rank 0 folds those records
from disk (and, with ``to_all``, sends each to the other ranks, which fold it too) and the
rounds start at batch k; rank 0 stores the record of every batch it folds.

Failures: a rank whose compute or fold raises says so in the next status exchange, and every
rank raises: the failing rank its own error, the others `RankFailed` naming it, so rank 0 marks
the run failed and no rank waits for one that has left. An error elsewhere inside `together`
(loading the model on one rank, say) is announced the same way before it propagates. A rank
that dies without a word (killed, out of host memory) is seen by torchrun, which stops the
others with SIGTERM; rank 0 waits in Python (polling the collective), so its SIGTERM handler
runs and the lifecycle marks the run failed. Every wait gives up after
`geomlens.runner.distributed.rank_timeout` seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import pickle
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
import torch.distributed as dist

from geomlens.errors import GeomlensError
from geomlens.runner.distributed import DistInfo, init_distributed, rank_timeout, shutdown

if TYPE_CHECKING:
    from geomlens.runner.record_log import RecordLog

POLL_S = 0.005
"""Seconds between two looks at a pending collective."""


class RankFailed(GeomlensError):
    """Another rank of the launch failed (raised on every rank that did not fail itself)."""


@dataclass
class Ranks:
    """This process's place in the launch, and the collectives the sharded commands use."""

    info: DistInfo
    device: torch.device
    """The device of this rank (``cuda:LOCAL_RANK`` under torchrun on CUDA)."""

    @classmethod
    def start(cls, device: torch.device) -> Ranks:
        """Join the process group when launched by torchrun with WORLD_SIZE > 1
        (`geomlens.runner.distributed.init_distributed`); else one rank. The group stays for
        the next command of the same process (a script that runs several) and is destroyed
        when the process exits."""
        first = not dist.is_initialized()
        info, device = init_distributed(device)
        if info.enabled and first:
            atexit.register(shutdown, info)
        return cls(info, device)

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Inside the block, an error on this rank is announced to the others (which then
        raise `RankFailed`) before it propagates."""
        try:
            yield
        except Exception as exc:
            if self.info.enabled and not _announced(exc):
                self._exchange(0, exc)
            raise

    def agree_min(self, value: int) -> int:
        """The smallest ``value`` over the ranks (``value`` itself in one process)."""
        if not self.info.enabled:
            return value
        return min(self._exchange(value, None))

    def map(self, n: int, compute: Callable[[int], Any], fold: Callable[[int, Any], None], *,
            to_all: bool = False, log: RecordLog | None = None) -> None:
        """``fold(i, compute(i))`` for i in range(n), the computes spread over the ranks and the
        folds in order on rank 0 (every rank with ``to_all``); see the module docstring.

        ``log``: the run's batch records (`geomlens.runner.record_log`): rank 0 folds the
        stored records of batches 0..k-1 instead of computing them (every rank skips them) and
        stores the record of every batch it folds."""
        done = 0
        if log is not None:
            done = self.from_main(log.count(n) if self.is_main else 0)
            if to_all and self.info.enabled:
                self._replay_to_all(log, done, fold)
            elif self.is_main:
                log.replay(done, fold)
            if self.is_main:
                fold = log.keeping(fold)
        if not self.info.enabled:
            for i in range(done, n):
                fold(i, compute(i))
            return
        self._rounds(done, n, compute, fold, to_all)

    def _replay_to_all(self, log: RecordLog, done: int, fold: Callable[[int, Any], None]) -> None:
        """Every rank folds the stored records of batches 0..done-1: rank 0 reads each one (a
        record it cannot read fails every rank at the status exchange) and sends the file's
        bytes, which the other ranks decode as data (`RecordLog.decode`), never unpickle."""
        for i in range(done):
            record, data, error = None, None, None
            if self.is_main:
                try:
                    record, data = log.read(i), log.path(i).read_bytes()
                except Exception as exc:  # noqa: BLE001  (announced below, then raised)
                    error = exc
            self._exchange(0, error)
            box = [data]
            dist.broadcast_object_list(box, src=0)
            fold(i, record if self.is_main else log.decode(i, box[0]))

    def from_main(self, value: int) -> int:
        """Rank 0's ``value`` on every rank."""
        return value if not self.info.enabled else self._exchange(value, None)[0]

    def _rounds(self, done: int, n: int, compute: Callable[[int], Any],
                fold: Callable[[int, Any], None], to_all: bool) -> None:
        """Batches done..n-1 in rounds of one batch per rank (the module docstring)."""
        world, rank = self.info.world_size, self.info.rank
        error: Exception | None = None
        for first in range(done, n, world):
            payload = None
            if error is None and first + rank < n:
                try:
                    payload = pickle.dumps(to_cpu(compute(first + rank)))
                except Exception as exc:  # noqa: BLE001  (announced below, then raised)
                    error = exc
            self._exchange(0, error)
            payloads = self._collect(payload, to_all)
            if payloads is None:
                continue
            try:
                for i, data in enumerate(payloads[: n - first]):
                    fold(first + i, pickle.loads(data))
            except Exception as exc:  # noqa: BLE001  (announced in the next exchange)
                error = exc
        self._exchange(0, error)

    # ------------------------------------------------------------------ collectives

    def _exchange(self, value: int, error: Exception | None) -> list[int]:
        """Every rank's ``value``; raises on every rank when one of them brings an error."""
        mine = torch.tensor([int(error is not None), value], dtype=torch.int64, device=self.device)
        everyone = [torch.zeros_like(mine) for _ in range(self.info.world_size)]
        self._wait(dist.all_gather(everyone, mine, async_op=True))
        failed = [r for r, t in enumerate(everyone) if int(t[0])]
        if not failed:
            return [int(t[1]) for t in everyone]
        messages: list[Any] = [None] * self.info.world_size
        dist.all_gather_object(messages, None if error is None else _describe(error))
        if error is not None:
            _mark_announced(error)
            raise error
        first = failed[0]
        raise RankFailed(f"rank {first} of {self.info.world_size} failed: {messages[first]}")

    def _collect(self, payload: bytes | None, to_all: bool) -> list[bytes] | None:
        world = self.info.world_size
        if to_all:
            out: list[Any] = [None] * world
            dist.all_gather_object(out, payload)
            return out
        out = [None] * world if self.is_main else None
        dist.gather_object(payload, out, dst=0)
        return out

    def _wait(self, work) -> None:
        """Wait for ``work`` in Python (signal handlers keep running), at most
        `rank_timeout` seconds."""
        limit = rank_timeout()
        deadline = time.monotonic() + limit
        while not work.is_completed():
            if time.monotonic() > deadline:
                raise _announce(RankFailed(f"no word from the other ranks for {limit:.0f} s "
                                           "(GEOMLENS_RANK_TIMEOUT); a rank hangs or died"))
            time.sleep(POLL_S)
        work.wait()


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (in dataclasses, dicts, lists, tuples) moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: to_cpu(getattr(obj, f.name))
                                           for f in dataclasses.fields(obj) if f.init})
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a namedtuple
        return type(obj)(*(to_cpu(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, GeomlensError) else text


def _mark_announced(exc: Exception) -> None:
    with contextlib.suppress(AttributeError, TypeError):
        exc._geomlens_ranks_told = True


def _announce(exc: Exception) -> Exception:
    _mark_announced(exc)
    return exc


def _announced(exc: Exception) -> bool:
    return isinstance(exc, RankFailed) or getattr(exc, "_geomlens_ranks_told", False)
