"""Where a pipeline job's output goes (its Snakemake ``log:`` file) and the device it runs on.

`logging_to` points this process's stdout and stderr (file descriptors 1 and 2, so that
subprocesses such as torchrun workers and C-level warnings follow) and Python logging at the
log file for the duration of the job, and restores them afterwards. `progress` wraps a job's
long loops so that the log gets a line with rate and ETA at least every minute.

Earlier attempts' logs are kept (`keep_earlier_logs`): ``<log>.1`` is the previous attempt's,
``<log>.2`` the one before, up to `KEPT_LOGS`. Snakemake deletes a job's log before it runs the
job again (snakemake 9.27.1, ``Job.remove_existing_output``), so a job gives its log a second,
hidden name, ``.<log name>.current`` (a hard link: no extra space); the next attempt renames it
to ``<log>.1``. An orphan still running after a kill -9 of Snakemake writes on into that file,
and the new attempt's log starts clean.

`job_device` is the device a job's scripts pass on: CUDA when the rule's ``resources: gpu=``
gives the job a GPU, else the CPU.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PROGRESS_INTERVAL_S = 60.0  # a progress line at least this often while a loop runs
KEPT_LOGS = 5  # earlier attempts' logs kept beside a job's log: <log>.1 (newest) to <log>.5
T = TypeVar("T")


def job_device(gpus: int | str) -> str:
    """``"cuda"`` for a job given ``gpus`` (its ``resources: gpu=`` count) of at least one, else
    ``"cpu"``."""
    return "cuda" if int(gpus) > 0 else "cpu"


def current_log_link(path: Path) -> Path:
    """The hidden second name of the latest attempt's log, which outlives Snakemake's delete."""
    return path.with_name(f".{path.name}.current")


def keep_earlier_logs(path: str | Path, kept: int = KEPT_LOGS) -> list[Path]:
    """Rename the logs of earlier attempts of a job to ``<log>.1`` (newest), ``<log>.2``, ...,
    dropping any past ``<log>.<kept>``, and leave ``path`` free for a new log; return the files
    the earlier logs now have, newest first. An earlier log is the latest attempt's (under its
    `current_log_link`; its job may still be writing it) and ``path`` itself when it holds another
    log (a job run by hand, or by a workflow tool that leaves logs in place)."""
    path = Path(path)
    current = current_log_link(path)
    earlier = [current] if current.exists() else []
    if path.is_file() and path.stat().st_size and not (earlier and path.samefile(current)):
        earlier.append(path)
    for log in earlier:  # oldest first
        _generation(path, kept).unlink(missing_ok=True)
        for generation in range(kept - 1, 0, -1):
            if _generation(path, generation).exists():
                os.replace(_generation(path, generation), _generation(path, generation + 1))
        os.replace(log, _generation(path, 1))
    path.unlink(missing_ok=True)  # another name of a log just kept
    return [_generation(path, generation) for generation in range(1, min(len(earlier), kept) + 1)]


def _generation(path: Path, generation: int) -> Path:
    return path.with_name(f"{path.name}.{generation}")


def _name_current_log(path: Path) -> str | None:
    """Give the new log ``path`` its `current_log_link`; the reason when that is impossible."""
    current = current_log_link(path)
    current.unlink(missing_ok=True)
    try:
        os.link(path, current)
    except OSError as error:  # a file system without hard links
        return f"{current}: {error}"
    return None


@contextmanager
def logging_to(path: str | Path) -> Iterator[None]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = keep_earlier_logs(path)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a") as log:
        unlinked = _name_current_log(path)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr, force=True)
        logger = logging.getLogger(__name__)
        for earlier in kept:
            logger.info("an earlier attempt's log is kept as %s", earlier)
        if unlinked:
            logger.warning("the next attempt cannot keep this log (%s)", unlinked)
        try:
            yield
        except BaseException:
            logger.exception("job failed")
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def progress(
    items: Iterable[T],
    desc: str,
    *,
    total: int | None = None,
    unit: str = "batch",
    enabled: bool = True,
    interval_s: float = PROGRESS_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """``items``, logging progress to the job log: a line with count, rate and ETA whenever
    ``interval_s`` (a minute) has passed since the last one, and a closing line with the count,
    time and rate. Log lines, not a terminal bar: they read well in a log file (tqdm's carriage
    returns do not) and on a cluster's job output."""
    if not enabled:
        yield from items
        return
    if total is None:
        total = len(items) if isinstance(items, Sized) else None
    logger = logging.getLogger("ddae.progress")
    units = unit + ("es" if unit.endswith(("s", "sh", "ch", "x")) else "s")
    started = last = now = clock()
    done = 0
    for item in items:
        yield item
        done += 1
        now = clock()
        if now - last >= interval_s:
            last = now
            rate = done / max(now - started, 1e-9)
            if total:
                eta = _duration((total - done) / rate)
                share = f"{done}/{total} {units} ({100 * done / total:.0f}%)"
                logger.info("%s: %s, %.3g %s/s, ETA %s", desc, share, rate, unit, eta)
            else:
                logger.info("%s: %d %s, %.3g %s/s", desc, done, units, rate, unit)
    elapsed = now - started
    rate = done / max(elapsed, 1e-9)
    logger.info(
        "%s: done, %d %s in %s (%.3g %s/s)", desc, done, units, _duration(elapsed), rate, unit
    )
