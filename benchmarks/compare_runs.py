"""Compare two finished runs' result folders value by value: does a restructuring change a number?

Every JSON, JSONL and CSV result under the two ``results/`` folders is read and compared key by
key (CSV: cell by cell); checkpoints are compared tensor by tensor. Values that record where or
when a file was made, not what it measures (wall times, throughputs, dates, absolute paths of
temporary folders, log-line timestamps), are listed in ``VOLATILE`` and skipped. Figures and
Markdown are compared by their text (Markdown) or not at all (PNG, PDF: their bytes carry dates).

    python benchmarks/compare_runs.py /work/baseline_results tests/smoke/results

Prints one line per differing value and a summary; exits 1 when any measured value differs.
A measurement script, not a test: the tests assert numbers on tiny inputs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

# keys whose values say when, how fast or where a file was made, not what it measures
VOLATILE = {
    "seconds",
    "wall_seconds",
    "elapsed_seconds",
    "images_per_second",
    "samples_per_second",
    "images_per_s",
    "created_at",
    "time",
    "date",
    "duration",
    "started",
    "finished",
    "feature_dirs",
    "host",
    "hostname",
    "versions",
    "software",
}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)  # an optimizer state's parameter numbers are ints
            if key in VOLATILE or "second" in key or key.endswith("_at"):
                continue
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else key))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _records(path: Path) -> dict[str, Any]:
    """A result file as flat key → value."""
    if path.suffix == ".json":
        return _flatten(json.loads(path.read_text()))
    if path.suffix == ".jsonl":
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return _flatten(lines)
    if path.suffix in {".csv", ".tsv"}:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))
        return _flatten(rows)
    if path.suffix == ".md":
        return {"text": path.read_text()}
    return {}


def _same(a: Any, b: Any) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return math.isclose(x, y, rel_tol=0.0, abs_tol=0.0) or (math.isnan(x) and math.isnan(y))


def _checkpoint_differences(a: Path, b: Path) -> list[str]:
    import torch

    def tensors(path: Path) -> dict[str, Any]:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v for k, v in _flatten(state).items() if isinstance(v, torch.Tensor)}

    # NumPy's global generator is never seeded (every stage draws from seeded generators of its
    # own), so its state in a checkpoint differs between any two processes: not compared
    left, right = tensors(a), tensors(b)
    left, right = ({k: v for k, v in side.items() if ".numpy." not in k} for side in (left, right))
    keys = sorted(set(left) | set(right))
    return [k for k in keys if not (k in left and k in right and torch.equal(left[k], right[k]))]


def compare(before: Path, after: Path) -> list[str]:
    """Every differing value between two results folders, as printable lines."""
    differences = []
    names = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    names |= {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    for name in sorted(names):
        a, b = before / name, after / name
        if name.suffix in {".png", ".pdf", ".npz", ".npy", ".log"} or "partial" in name.parts:
            continue
        if not a.exists() or not b.exists():
            differences.append(f"{name}: only in {'after' if not a.exists() else 'before'}")
            continue
        if name.suffix == ".pt":
            differences += [f"{name}: tensor {k} differs" for k in _checkpoint_differences(a, b)]
            continue
        left, right = _records(a), _records(b)
        for key in sorted(set(left) | set(right)):
            if not _same(left.get(key), right.get(key)):
                differences.append(f"{name}: {key}: {left.get(key)!r} -> {right.get(key)!r}")
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    differences = compare(args.before, args.after)
    for line in differences:
        print(line)
    files = sum(1 for p in args.before.rglob("*") if p.is_file())
    print(f"{len(differences)} differing values; {files} files under {args.before}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
