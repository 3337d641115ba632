"""Processes a test started and must end: every live process that works in, or was started from
or configured with, one of the test's temporary directories (its working directory lies inside
one, or its command line or environment names one). A SLURM job's processes are found this way
after their job is gone: the test cluster's proctrack/linuxproc loses a process reparented to
init, so a cancelled job's Snakemake may outlive ``scancel`` (issue 23, item 7)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path


def _ancestors() -> set[int]:
    """This process and its parents: never ended, whatever their command line names."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def processes_of(*directories: Path) -> dict[int, str]:
    """{pid: command line} of the live processes (zombies are dead) of ``directories``."""
    marks = [str(Path(directory).resolve()) for directory in directories]
    # a directory's name ends where a path, an argument or a variable does (slurm0, not slurm01)
    named = re.compile(b"|".join(re.escape(mark.encode()) + rb"(?=[/\0:\s]|$)" for mark in marks))
    found, mine = {}, _ancestors()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cwd = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes()
            text = command + b"\0" + (entry / "environ").read_bytes()
            inside = any(cwd == mark or cwd.startswith(mark + "/") for mark in marks)
            if inside or named.search(text):
                found[int(entry.name)] = command.replace(b"\0", b" ").decode(errors="replace")
    return found


def end_processes(*directories: Path, grace_s: float = 10.0) -> dict[int, str]:
    """SIGTERM every process of ``directories``, SIGKILL what is left after ``grace_s``; return
    {pid: command line} of those found. Raises AssertionError if any survives SIGKILL."""
    found = processes_of(*directories)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in processes_of(*directories):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while processes_of(*directories) and time.monotonic() < deadline:
            time.sleep(0.1)
    left = processes_of(*directories)
    assert not left, f"processes of {directories} survive SIGKILL: {left}"
    return found
