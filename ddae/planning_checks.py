"""Inputs verified while Snakemake plans, before it deletes any output (issue 23, item 6).

Snakemake deletes a job's old outputs when the job starts, so a job that only finds out then
that its input is damaged has already destroyed good results: a byte flipped in
``checkpoints/epoch1.pt`` (with a new mtime) used to cost ``epoch2.pt``, a truncated final
checkpoint its FID and grid results. The rules therefore pass every checkpoint and dataset a
job reads through `verified_input` in their input functions, which Snakemake evaluates while
it builds the DAG, before any job runs (``snakemake -n`` included):

* an existing ``.npz`` or ``.pt`` must end in its zip directory (reads the last few KB);
* an existing ``.pt`` must load and match the content hash it carries
  (`ddae.checkpoints.verify_checkpoint`: every tensor byte, memory-mapped).

Hashing a paper-scale checkpoint takes seconds, so a verified file is remembered by
(size, mtime_ns) in ``.snakemake/ddae/verified_checkpoints.json`` of the working directory
(Snakemake's own state folder, not results/): the next plan only stats it, and a file written
or touched since is verified again. torch is imported only when a checkpoint needs hashing.
A cluster job re-parses the rules and checks its own inputs the same way: it finds the
checkpoints verified by the main process in the shared cache, and hashes only one written
during the run (its first readers do). A damaged input raises `DamagedInputError`
naming the file, what is wrong and what to do; nothing has been deleted at that point.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

CACHE_FILE = Path(".snakemake/ddae/verified_checkpoints.json")
ARCHIVES = (".pt", ".npz")  # zip files: torch.save's format and NumPy's
PLANNING = (
    "Snakemake stopped while planning, before deleting any output; once the file is deleted, "
    "Snakemake rebuilds it (training or importing it again) and what depends on it"
)

_verified: dict[Path, dict[str, list[int]]] = {}  # cache file -> its entries, read once


class DamagedInputError(ValueError):
    """A file a planned job would read is truncated or corrupt; the message names it."""


def _entries(cache_file: Path) -> dict[str, list[int]]:
    if cache_file not in _verified:
        try:
            _verified[cache_file] = dict(json.loads(cache_file.read_text()))
        except (OSError, ValueError, TypeError):  # none yet, or unreadable: verify again
            _verified[cache_file] = {}
    return _verified[cache_file]


def _remember(cache_file: Path, entries: dict[str, list[int]]) -> None:
    """Write the cache atomically; a read-only workdir only costs a rehash next time."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(entries, indent=0, sort_keys=True))
        os.replace(partial, cache_file)
    except OSError:
        pass


def _stamp(path: str) -> list[int]:
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def verified_input(path: str, cache_file: str | Path = CACHE_FILE) -> str:
    """``path``, after checking that an existing archive is whole and an existing checkpoint
    matches its content hash (module docstring); a missing file is left to Snakemake."""
    if not path.endswith(ARCHIVES) or not os.path.isfile(path):
        return path
    entries = _entries(Path(cache_file))
    key = os.path.abspath(path)
    if path.endswith(".pt") and entries.get(key) == _stamp(path):
        return path  # verified before, unchanged since
    if not zipfile.is_zipfile(path):
        raise DamagedInputError(
            f"{path}: truncated or corrupt (no zip directory at its end); delete it, or restore "
            f"it from a copy. {PLANNING}"
        )
    if path.endswith(".pt"):
        stamp = _stamp(path)
        from ddae.checkpoints import CheckpointError, verify_checkpoint  # torch: when needed

        try:
            verify_checkpoint(path)
        except CheckpointError as error:
            raise DamagedInputError(f"{error}. {PLANNING}") from None
        entries[key] = stamp
        _remember(Path(cache_file), entries)
    return path
