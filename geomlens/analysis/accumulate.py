"""Accumulation: the per-position metrics of a batch become its per-token table, which is
reduced to per-segment means (and streamed to parquet or kept, on request) before the next
batch; the control metrics become running sums. Nothing vocabulary-sized outlives a chunk, so
peak memory does not grow with the number of segments."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from geomlens.analysis.scoring import ScoredChunk, Targets

LABEL_COLUMNS = ("segment", "domain", "hidden", "target", "score")
"""The categorical columns of the per-token table (with ``pos``, they identify a row)."""


class ControlSums:
    """Running sums of the control metrics, keyed by (hidden, target, score, variant, index)."""

    def __init__(self) -> None:
        self.sums: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.counts: dict[tuple, int] = defaultdict(int)
        self.null: dict[tuple, dict[str, np.ndarray]] = {}
        """(hidden, target, score) -> metric -> sums over positions, one per permutation."""
        self.null_counts: dict[tuple, int] = defaultdict(int)

    def add_null(self, hidden: str, target: str, score: str, sums: dict[str, np.ndarray],
                 n_positions: int) -> None:
        """The permutation null of one score (`PermutationNull.finish`)."""
        key = (hidden, target, score)
        store = self.null.setdefault(key, {})
        for name, values in sums.items():
            store[name] = store[name] + values if name in store else values.copy()
        self.null_counts[key] += n_positions

    def add(self, key: tuple, n_positions: int, sums: dict[str, float]) -> None:
        """One chunk's sums (`chunk_sums`), added in the order the chunks were scored."""
        self.counts[key] += n_positions
        for name, value in sums.items():
            self.sums[key][name] += value

    @staticmethod
    def chunk_sums(scored: ScoredChunk) -> list[tuple[tuple, int, dict[str, float]]]:
        """``(key, n_positions, {metric: float64 sum})`` of each control of a scored chunk."""
        out = []
        for score, variant, index, metrics in scored.controls:
            n_positions = next(iter(metrics.values())).shape[0]
            out.append(((scored.hidden, scored.target, score, variant, index), n_positions,
                        {name: float(val.double().sum()) for name, val in metrics.items()}))
        return out

    def copy_aliases(self, alias: dict[str, str]) -> None:
        """Give each aliased target the sums of the target it reuses (the same numbers)."""
        for alias_name, real in alias.items():
            if alias_name == real:
                continue
            for store in (self.sums, self.counts, self.null, self.null_counts):
                store.update({(k[0], alias_name, *k[2:]): v for k, v in list(store.items())
                              if k[1] == real})

    def frame(self) -> pd.DataFrame:
        rows = []
        for key, sums in self.sums.items():
            hidden, target, score, variant, index = key
            n_positions = self.counts[key]
            rows.append({"hidden": hidden, "target": target, "score": score, "variant": variant,
                         "index": index, "n_positions": n_positions,
                         **{m: s / n_positions for m, s in sums.items()}})
        frames = [pd.DataFrame(rows)]
        for (hidden, target, score), sums in self.null.items():
            n_positions = self.null_counts[(hidden, target, score)]
            n_perm = len(next(iter(sums.values())))
            frames.append(pd.DataFrame({
                "hidden": hidden, "target": target, "score": score, "variant": "permutation",
                "index": np.arange(n_perm), "n_positions": n_positions,
                **{m: v / n_positions for m, v in sums.items()}}))
        return pd.concat([f for f in frames if len(f)], ignore_index=True) if any(
            len(f) for f in frames) else pd.DataFrame()


class TokenTable:
    """The per-token table of one batch: one row per (position, hidden, target, score)."""

    def __init__(self, segments: Sequence[str], domains: Sequence[str], pos: np.ndarray,
                 targets: Targets) -> None:
        self.segments, self.domains, self.pos = list(segments), list(domains), pos
        self.targets = targets
        self.cols: dict[str, list] = defaultdict(list)

    def add(self, scored: ScoredChunk) -> None:
        """Rows of one scored chunk, repeated for every requested alias of its target."""
        chunk = slice(scored.start, scored.stop)
        n_positions = scored.stop - scored.start
        for score, metrics in scored.metrics.items():
            values = {k: v.cpu().numpy() for k, v in metrics.items()}
            for target in self.targets.requested_as(scored.target):
                self.cols["segment"] += self.segments[chunk]
                self.cols["domain"] += self.domains[chunk]
                self.cols["pos"].append(self.pos[chunk])
                self.cols["hidden"] += [scored.hidden] * n_positions
                self.cols["target"] += [target] * n_positions
                self.cols["score"] += [score] * n_positions
                for k, v in values.items():
                    self.cols[k].append(v)

    def frame(self) -> pd.DataFrame:
        table = pd.DataFrame({k: (np.concatenate(v) if isinstance(v[0], np.ndarray) else v)
                              for k, v in self.cols.items()})
        for c in LABEL_COLUMNS:
            table[c] = table[c].astype("category")
        return table


class Accumulator:
    """What outlives a batch: per-segment means, the NDCG@full error bound, and the per-token
    tables (streamed to ``per_token_path`` and/or kept when asked)."""

    def __init__(self, metrics: list[str], *, per_token_path: str | Path | None,
                 keep_per_token: bool) -> None:
        self.metrics = metrics
        self.per_token_path, self.keep_per_token = per_token_path, keep_per_token
        self.segment_tables: list[pd.DataFrame] = []
        self.kept: list[pd.DataFrame] = []
        self.writer = None
        self.n_positions = 0
        self.err_max, self.err_sum = 0.0, 0.0

    def add(self, table: pd.DataFrame, n_positions: int) -> None:
        self.n_positions += n_positions
        self.err_max = max(self.err_max, float(table["ndcg_full_err"].max()))
        self.err_sum += float(table["ndcg_full_err"].sum())
        self.segment_tables.append(per_segment(table, self.metrics))
        if self.per_token_path is not None:
            self.writer = _write_parquet(self.writer, self.per_token_path, table)
        if self.keep_per_token:
            self.kept.append(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def per_segment(self) -> pd.DataFrame:
        return pd.concat(self.segment_tables, ignore_index=True)

    def per_token(self) -> pd.DataFrame | None:
        return pd.concat(self.kept, ignore_index=True) if self.kept else None


def per_segment(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean of every metric (and ``ndcg_full_err``) per segment and label, plus n_positions."""
    cols = [m for m in metrics if m in table.columns] + ["ndcg_full_err"]
    grouped = table.groupby(list(LABEL_COLUMNS), observed=True)
    out = grouped[cols].mean()
    out.insert(0, "n_positions", grouped.size())
    return out.reset_index()


def _write_parquet(writer, path: str | Path, table: pd.DataFrame):
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = table.astype({c: str for c in LABEL_COLUMNS})
    arrow = pa.Table.from_pandas(plain, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(str(path), arrow.schema)
    writer.write_table(arrow)
    return writer
