"""A writer killed mid-write (kill -9, a walltime) leaves its hidden temporary beside the target
(an 84 MB ``.epoch2.pt.<pid>.<token>.tmp`` in issue 23, item 7): the next writer of the same
target removes it, and leaves alone the temporary of a writer that is still alive."""

from __future__ import annotations

import errno
import fcntl
import json
import signal
import subprocess
import sys
import textwrap

import pytest

from ddae.cache_dirs import staged_dir
from ddae.result_writers import remove_stale_temporaries, write_json

# a writer that stops inside its atomic write: "ready" once the temporary holds 1 MB
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ddae.cache_dirs import staged_dir
    from ddae.result_writers import atomic_output

    target = Path(sys.argv[1])
    if sys.argv[2] == "file":
        with atomic_output(target) as handle:
            handle.write(b"x" * 2**20)
            handle.flush()
            print("ready", flush=True)
            sys.stdin.readline()
            handle.write(b"done")
    else:
        with staged_dir(target) as folder:
            (folder / "train.npy").write_bytes(b"x" * 2**20)
            print("ready", flush=True)
            sys.stdin.readline()
    """
)


def start_writer(target, kind: str) -> subprocess.Popen:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout.readline() == "ready\n"
    return writer


def hidden(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_next_writer_removes_a_killed_writers_temporary_but_not_a_live_ones(tmp_path, kind):
    target = tmp_path / ("epoch2.pt" if kind == "file" else "t11")
    live = start_writer(target, kind)  # started first: the second writer must not remove it
    killed = start_writer(target, kind)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    try:
        left = hidden(tmp_path)
        # each writer: its temporary and its lock file
        assert len(left) == 4 and sum(name.endswith(".tmp") for name in left) == 2
        assert sum(f".{target.name}.{killed.pid}." in name for name in left) == 2
        # another target whose name starts with this one's keeps its (stale) temporary
        other = tmp_path / f".{target.name}.b.{killed.pid}.0123abcd.tmp"
        other.write_bytes(b"y")
        removed = remove_stale_temporaries(target)
        assert [path.name for path in removed] == [
            name for name in left if name.endswith(".tmp") and f".{killed.pid}." in name
        ]
        assert hidden(tmp_path) == sorted(
            [other.name, *(name for name in left if f".{live.pid}." in name)]
        )
        live.communicate("go\n", timeout=30)
        assert live.returncode == 0
    finally:
        live.kill()
    assert hidden(tmp_path) == [other.name]
    if kind == "file":
        assert target.stat().st_size == 2**20 + 4
    else:
        assert (target / "train.npy").stat().st_size == 2**20
    # killed alone: the next write of the target (here, in this process) cleans up first
    killed = start_writer(target, kind)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert len(hidden(tmp_path)) == 3
    if kind == "file":
        write_json(target, {"rewritten": True})
    else:
        with staged_dir(target) as folder:
            (folder / "meta.json").write_text("{}")
    assert hidden(tmp_path) == [other.name]


def test_a_write_cleans_its_targets_stale_temporaries_first(tmp_path):
    target = tmp_path / "fid" / "epoch2.json"
    target.parent.mkdir()
    # one without a lock file, as the writers before the locks left them; a lock left alone
    legacy = target.with_name(f".{target.name}.4242.89abcdef.tmp")
    legacy.write_bytes(b"z" * 1000)
    orphan_lock = target.with_name(f".{target.name}.4243.fedcba98.lock")
    orphan_lock.touch()
    write_json(target, {"fid": 1.0})
    assert json.loads(target.read_text()) == {"fid": 1.0}
    assert hidden(target.parent) == []


def test_a_staged_cache_cleans_its_stale_folders_first(tmp_path):
    target = tmp_path / "t5"
    stale = tmp_path / ".t5.4242.89abcdef.tmp"
    stale.mkdir()
    (stale / "train.npy").write_bytes(b"z")
    with staged_dir(target) as folder:
        (folder / "meta.json").write_text("{}")
        assert not stale.exists()
    assert hidden(tmp_path) == [] and (target / "meta.json").exists()


def test_without_file_locks_writes_go_on_and_clean_nothing(tmp_path, monkeypatch):
    """On a file system without flock (some Lustre mounts) no temporary can be told stale."""

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    target = tmp_path / "epoch2.json"
    unknown = tmp_path / f".{target.name}.4242.89abcdef.tmp"
    unknown.write_bytes(b"z")
    (tmp_path / f".{target.name}.4242.89abcdef.lock").touch()
    write_json(target, {"fid": 2.0})
    assert json.loads(target.read_text()) == {"fid": 2.0}
    assert hidden(tmp_path) == [f".{target.name}.4242.89abcdef.lock", unknown.name]
