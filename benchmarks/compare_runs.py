"""Compare two run directories of the same config: ``summary.json`` up to the clocks and the
world size, and every CSV / Markdown table byte for byte; prints one line, exits 1 on a
difference.

    python benchmarks/compare_runs.py runs/analyze-1 runs/analyze-2
    python benchmarks/compare_runs.py --largest runs/analyze-cpu runs/analyze-cuda
                                                    # the largest difference of the numbers
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CLOCKS = ("wall_time_s",)


def _summary(run: Path) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    for key in CLOCKS:
        summary.pop(key, None)
    return summary


def compare(one: Path, two: Path) -> list[str]:
    """The names of what differs between the two runs (empty: equal)."""
    differ = []
    for run in (one, two):
        if not (run / "done").exists():
            differ.append(f"{run.name}: not done")
    if differ:
        return differ
    if _summary(one) != _summary(two):
        differ.append("summary.json")
    tables = sorted(p.name for p in one.iterdir() if p.suffix in (".csv", ".md"))
    differ += [t for t in tables if (one / t).read_bytes() != (two / t).read_bytes()]
    world = json.loads((two / "env.json").read_text()).get("world_size")
    if world is None:
        differ.append("env.json: no world_size")
    return differ


def _leaves(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{path}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, float(node)


def largest_difference(one: Path, two: Path) -> tuple[float, str, int]:
    """The largest |a - b| over the numbers of the two summaries at the same place, where, and
    how many places differ in structure (a key or a non-number in one but not the other)."""
    a, b = dict(_leaves(_summary(one))), dict(_leaves(_summary(two)))
    worst, where = 0.0, ""
    for key in a.keys() & b.keys():
        gap = abs(a[key] - b[key])
        if gap > worst or gap != gap:
            worst, where = gap, key
    return worst, where, len(a.keys() ^ b.keys())


def main() -> int:
    if sys.argv[1] == "--largest":
        worst, where, unmatched = largest_difference(Path(sys.argv[2]), Path(sys.argv[3]))
        print(f"{Path(sys.argv[2]).name} vs {Path(sys.argv[3]).name}: largest |difference| "
              f"{worst:.3g} at {where or '-'}; {unmatched} numbers without a counterpart")
        return 0
    one, two = (Path(a) for a in sys.argv[1:3])
    differ = compare(one, two)
    tables = sum(p.suffix in (".csv", ".md") for p in one.iterdir()) if one.exists() else 0
    verdict = "equal" if not differ else "DIFFER: " + ", ".join(differ)
    print(f"{one.name} vs {two.name}: summary.json and {tables} tables {verdict}")
    return int(bool(differ))


if __name__ == "__main__":
    sys.exit(main())
