"""Where a pipeline job's output goes: its Snakemake ``log:`` file.

`logging_to` points this process's stdout and stderr (file descriptors 1 and 2, so that
subprocesses such as torchrun workers and C-level warnings follow) and Python logging at the
log file for the duration of the job, and restores them afterwards. `progress` wraps a job's
long loops so that the log gets a line with rate and ETA at least every minute.
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
T = TypeVar("T")


@contextmanager
def logging_to(path: str | Path) -> Iterator[None]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr, force=True)
        try:
            yield
        except BaseException:
            logging.getLogger(__name__).exception("job failed")
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
