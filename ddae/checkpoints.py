"""Checkpoint files: atomic writes, safe loads, and models rebuilt from their own file.

A checkpoint is a plain dict read with ``torch.load(weights_only=True)`` (no pickled classes or
source code). It carries the run config that built the model (network, framework, training
mappings; nanoGPT-style), so ``load_network(path)`` rebuilds the denoiser without any other
input. Training checkpoints also hold EMA weights, optimizer state, counters and every RNG state
for exact resumption (see `ddae.training`).

Writes go to a temporary file in the same folder, are fsync'ed and then renamed over the target,
so a crash never leaves a half-written checkpoint under the real name; the file gets the umask's
usual mode (readable by a lab's group, unlike mkstemp's private 0600). A truncated or corrupt
file raises `CheckpointError` naming the path; nothing silently falls back to a fresh model.

Integrity: PyTorch's zip reader does not check the CRCs it writes, so one flipped byte inside a
tensor loads silently. Every checkpoint therefore stores ``sha256``, the `content_digest` of its
payload (every key, value, tensor dtype, shape and byte), and `load_checkpoint` recomputes it:
any difference raises `CheckpointError` naming the file. Files written before the digest existed
(``ddae-checkpoint/1``) still load, with a warning that they cannot be verified.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import random
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddae.diffusion import Framework, build_framework
from ddae.networks import build_network
from ddae.result_writers import atomic_output

log = logging.getLogger(__name__)

FORMAT = "ddae-checkpoint/2"  # /2: payload carries its content sha256
LEGACY_FORMATS = ("ddae-checkpoint/1",)  # no digest: loaded unverified, with a warning
DIGEST_KEY = "sha256"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a ddae checkpoint."""


def content_digest(payload: Mapping[str, Any]) -> str:
    """sha256 over a checkpoint payload's plain data, in a canonical order (keys sorted).

    Tensors contribute dtype, shape and raw bytes (read on the CPU); everything else its type
    and ``repr``. The ``sha256`` key itself is left out.
    """
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, Mapping):
            digest.update(b"{")
            for key in sorted(value, key=repr):
                if value is payload and key == DIGEST_KEY:
                    continue
                digest.update(repr(key).encode() + b":")
                feed(value[key])
            digest.update(b"}")
        elif isinstance(value, (list, tuple)):
            digest.update(b"[")
            for item in value:
                feed(item)
                digest.update(b",")
            digest.update(b"]")
        else:
            digest.update(f"{type(value).__name__}:{value!r};".encode())

    feed(payload)
    return digest.hexdigest()


def save_checkpoint(payload: Mapping[str, Any], path: str | Path) -> None:
    """Write ``payload`` with its content digest to ``path`` atomically (temporary file, fsync,
    rename), with the umask's usual file mode."""
    payload = {"format": FORMAT, **payload}
    payload[DIGEST_KEY] = content_digest(payload)
    with atomic_output(Path(path)) as handle:
        torch.save(payload, handle)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; any damage raises `CheckpointError`.

    ``mmap`` maps the tensors from the file instead of reading them into memory."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # truncated zip, bad pickle, foreign format...
        raise CheckpointError(
            f"{path}: checkpoint is corrupt or truncated ({type(error).__name__}: {error}); "
            "delete it to retrain from the previous checkpoint"
        ) from error
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found in LEGACY_FORMATS:
        log.warning("%s: %s checkpoint has no content hash; loaded unverified", path, found)
        return payload
    if found != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file (found {found!r})")
    if payload.get(DIGEST_KEY) != content_digest(payload):
        raise CheckpointError(
            f"{path}: content hash mismatch: the file is corrupt (a changed byte); delete it to "
            "retrain from the previous checkpoint, or restore it from a copy"
        )
    return payload


def verify_checkpoint(path: str | Path) -> None:
    """Raise `CheckpointError` unless ``path`` loads and matches its content hash. Tensors are
    memory-mapped, so a large checkpoint is hashed without being held in memory
    (`ddae.planning_checks` verifies every checkpoint a job will read while Snakemake plans)."""
    load_checkpoint(path, mmap=True)


def load_network(
    path: str | Path,
    weights: str = "ema",
    map_location: str | torch.device = "cpu",
    frozen: bool = False,
) -> tuple[nn.Module, Framework, dict[str, Any]]:
    """Rebuild (network, framework, run config) from a checkpoint; ``weights`` is ema or model.

    The network is in eval mode; ``frozen`` also turns off its gradients (feature extraction).
    """
    payload = load_checkpoint(path, map_location)
    if weights not in payload:
        raise CheckpointError(f"{path}: checkpoint has no {weights!r} weights")
    run = payload["run"]
    network = build_network(run["network"])
    try:
        network.load_state_dict(payload[weights])
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not match its network config: {error}"
        ) from error
    if frozen:
        network.requires_grad_(False)
    return network.to(map_location).eval(), build_framework(run["framework"]), run


# --- one writer per partial state --------------------------------------------------------------

LOCK_FILE = "writer.lock"


class StateLockedError(CheckpointError):
    """Another live process is writing the same job's partial state."""


@contextlib.contextmanager
def partial_state_lock(state_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a job's partial-state folder for the duration of the job.

    A second writer (e.g. a rerun while the orphan of a ``kill -9``'d Snakemake still trains)
    fails at once with `StateLockedError` naming the holder, instead of training the same steps
    twice. The lock is an ``flock`` on ``state_dir/writer.lock``: the kernel drops it when its
    holder dies, so a killed job never leaves a stale lock behind. When the block ends, the lock
    file goes, and so do the state folder and ``partial/`` once empty (the job finished and
    removed its partial state; `_remove_finished_state`).
    """
    state_dir = Path(state_dir)
    with _locked(state_dir / LOCK_FILE) as handle:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
        _remove_finished_state(state_dir)  # still holding the lock
    # closing the file released the lock


@contextlib.contextmanager
def _locked(lock_path: Path, attempts: int = 3) -> Iterator[Any]:
    """The open lock file, flock'ed. A lock won on a file that a finishing holder unlinked
    meanwhile (its inode no longer at ``lock_path``) is no lock: open the path again."""
    for _ in range(attempts):
        lock_path.parent.mkdir(parents=True, exist_ok=True)  # a finishing job may remove it
        try:
            handle = lock_path.open("a+")
        except FileNotFoundError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise StateLockedError(
                    f"{lock_path.parent}: {holder} is still writing this job's partial state (an "
                    "orphan of a killed Snakemake keeps running); wait for it or stop it, then "
                    "rerun"
                ) from None
            try:
                locked_here = os.path.samestat(os.fstat(handle.fileno()), lock_path.stat())
            except FileNotFoundError:
                continue
            if not locked_here:
                continue
            yield handle
            return
    raise StateLockedError(f"{lock_path}: removed and recreated {attempts} times while locking")


def _remove_finished_state(state_dir: Path) -> None:
    """Remove the lock file (still held: a process that locks the path from now on makes a new
    one, `_locked`), then the state folder and its parent ``partial/`` if they are empty; a
    folder still holding a partial state (a failed job's, for the next attempt to resume) or
    another job's folder is kept."""
    (state_dir / LOCK_FILE).unlink(missing_ok=True)
    for folder in (state_dir, state_dir.parent):
        if folder.name != "partial" and folder != state_dir:
            break
        try:
            folder.rmdir()
        except OSError:  # not empty: a partial state, another job's state or lock
            break


# --- RNG states (every generator a training step touches) -------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states of torch (CPU and every CUDA device), NumPy and Python."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": random.getstate(),
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
