"""Array cache directories: feature caches (`ddae.features`) and VAE latent caches
(`ddae.latents`), each a folder of ``.npy`` arrays and a ``meta.json``.

A cache is written into a fresh temporary sibling that is renamed onto its place only when the
writer finishes (`staged_dir`), so a job killed mid-write leaves nothing that Snakemake or a later
stage could take for a cache; it is opened with its arrays memory-mapped read-only
(`open_cache_dir`), and a missing or unreadable part raises the caller's error naming the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ddae.result_writers import claimed_temporary

META_FILE = "meta.json"


@contextlib.contextmanager
def staged_dir(out_dir: Path) -> Iterator[Path]:
    """A fresh temporary sibling of ``out_dir`` to write into: moved onto ``out_dir`` when the
    block ends without error, removed otherwise (a reader never sees a half-written cache).
    What a writer of ``out_dir`` killed mid-write left is removed first
    (`ddae.result_writers.claimed_temporary`)."""
    with claimed_temporary(out_dir) as tmp:
        tmp.mkdir()
        try:
            yield tmp
            _replace_dir(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _replace_dir(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` (an existing target is replaced after the rename)."""
    if target.exists():
        trash = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(target, trash)
        os.replace(source, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, target)


def open_cache_dir(path: Path, cache_type: type, error_type: type[Exception], what: str) -> Any:
    """``cache_type(path, train, test, train_labels, test_labels, meta)`` of a cache directory:
    meta.json, the train/test arrays memory-mapped read-only and the labels; ``error_type`` when
    something is missing or unreadable."""
    try:
        return cache_type(
            path=path,
            train=np.load(path / "train.npy", mmap_mode="r"),
            test=np.load(path / "test.npy", mmap_mode="r"),
            train_labels=np.load(path / "train_labels.npy"),
            test_labels=np.load(path / "test_labels.npy"),
            meta=json.loads((path / META_FILE).read_text()),
        )
    except (OSError, ValueError, KeyError) as error:
        raise error_type(f"{path}: not a readable {what} cache ({error})") from error


def remove_cache_dir(cache_dir: Path) -> None:
    """Delete a cache folder and what an earlier attempt of the same job left beside it when it
    was killed (SIGKILL, a walltime): `staged_dir`'s ``.<name>.*.tmp`` folders and their
    ``.lock`` files, and `_replace_dir`'s ``.<name>.*.old`` folders. The caller owns the folder:
    no other job may be writing it (`ddae.grid_timesteps`: one job per (run, epoch, t))."""
    shutil.rmtree(cache_dir, ignore_errors=True)
    for pattern in (f".{cache_dir.name}.*.tmp", f".{cache_dir.name}.*.old"):
        for leftover in cache_dir.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
    for lock in cache_dir.parent.glob(f".{cache_dir.name}.*.lock"):
        lock.unlink(missing_ok=True)
    remove_empty_feature_folders(cache_dir)


FEATURES_FOLDER = "features"  # results/<dataset>/<run>/features/epoch<E>/t<t> (workflow rules)


def remove_empty_feature_folders(cache_dir: Path) -> None:
    """Remove the folders between ``cache_dir`` and its ``features/`` ancestor, that one
    included, while they are empty (a grid job's ``features/epoch<E>/`` and ``features/``), so
    that finished jobs leave no empty folders in results/; nothing outside a ``features/``
    folder is touched. A folder another job is writing into is not empty and stays; a writer
    that finds its folder gone makes it again (`ddae.result_writers.claimed_temporary`)."""
    names = [folder.name for folder in cache_dir.parents]
    if FEATURES_FOLDER not in names:
        return
    for folder in list(cache_dir.parents)[: names.index(FEATURES_FOLDER) + 1]:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone)
            return
