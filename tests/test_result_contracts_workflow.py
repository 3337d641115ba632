"""Issue 21's five holes in the result-file contract, each over a finished smoke run: a damaged
or foreign result file stops Snakemake while it plans, naming the file and the field, and no
output that reads it (nor any other) is deleted or rewritten. Each test puts the file back as it
was, modification time included (the other tests of the run compare times).

1. values out of range in the grid, noisy and alignment CSVs (each redrew its figure);
2. a result of another run and stage copied over a linear probe's (Figure 5 changed);
3. a grid choice naming layer 99 (the figure2 and scratch jobs failed, their outputs deleted);
4. a NaN accuracy in a per-t grid record (it became the grid's "best" cell);
5. a FIFO (planning hung) or a symlink to /dev/zero (planning read until memory ran out).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_workflow import REPO, SMOKE_CONFIG, SNAKEFILE, smoke_run  # noqa: F401 (a fixture)

from ddae.paper_shape import decoder_layer_count
from ddae.pipeline.contracts import check_written, locate, verified_result

pytestmark = pytest.mark.slow
EDM = "results/digits/digits_ddpmpp_edm"
DDPM = "results/digits/digits_ddpm"
PLANNING_LIMIT_S = 300  # planning takes seconds; a hung plan fails the test instead
MEMORY_LIMIT = 6 * 2**30  # address space of the Snakemake process: /dev/zero fails it fast


def _limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def snakemake_limited(workdir: Path) -> tuple[int, str]:
    """The whole workflow on ``workdir`` (its default target, one core), as a user runs it,
    with a time and memory limit: (exit code, stdout + stderr)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir)]
    try:
        result = subprocess.run(
            [*command, "--cores", "1"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=PLANNING_LIMIT_S,
            preexec_fn=_limited_memory,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"Snakemake still planning after {PLANNING_LIMIT_S} s") from error
    return result.returncode, result.stdout + result.stderr


def results_state(workdir: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under results/: a job that ran or an output that was
    deleted changes it."""
    return {
        str(path.relative_to(workdir)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted((workdir / "results").rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


@contextlib.contextmanager
def damaged(workdir: Path, name: str, damage: Callable[[Path], None]) -> Iterator[None]:
    """``name`` damaged by ``damage`` for the block, then restored with its modification time."""
    path = workdir / name
    original, stat = path.read_bytes(), path.stat()
    try:
        damage(path)
        yield
    finally:
        if path.is_symlink() or not path.is_file():
            path.unlink()
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def stops_while_planning(
    workdir: Path, name: str, damage: Callable[[Path], None], readers: list[str], *fields: str
) -> str:
    """Run the workflow with ``name`` damaged: it must fail naming the file and ``fields``, with
    every output under results/ as it was (``readers``, the outputs that read the file, compared
    byte by byte). A message about a grid CSV and its choice names the choice first."""
    before = {reader: (workdir / reader).read_bytes() for reader in readers}
    state = results_state(workdir)
    with damaged(workdir, name, damage):
        code, output = snakemake_limited(workdir)
        after = results_state(workdir)
    assert code != 0, output[-3000:]
    assert f"{name}: " in output or f"of {name} (" in output, output[-3000:]
    for field in fields:
        assert field in output, (field, output[-3000:])
    assert "kept" in output, output[-3000:]
    assert {reader: (workdir / reader).read_bytes() for reader in readers} == before
    changed = {key for key in state.keys() | after.keys() if state.get(key) != after.get(key)}
    assert changed <= {name}, sorted(changed)
    return output


def set_json(**values) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.write_text(json.dumps({**json.loads(path.read_text()), **values}, indent=2))

    return damage


def set_cell(row: int, column: str, value: str) -> Callable[[Path], None]:
    """Replace one cell of a CSV (row 1 is the first after the header)."""

    def damage(path: Path) -> None:
        lines = path.read_text().splitlines()
        header = lines[0].split(",")
        cells = lines[row].split(",")
        cells[header.index(column)] = value
        lines[row] = ",".join(cells)
        path.write_text("\n".join(lines) + "\n")

    return damage


REPORT = ["results/findings.json", "results/findings.md", "results/layer_choice.csv"]
FIGURES = {k: [f"results/figure{k}.png", f"results/figure{k}.pdf"] for k in (2, 3, 5, 6)}


@pytest.mark.parametrize(
    ("name", "row", "column", "value", "readers"),
    [
        (f"{EDM}/grid/epoch4.csv", 1, "test_accuracy", "500", [*REPORT, *FIGURES[2]]),
        (f"{DDPM}/noisy/epoch2.csv", 1, "test_accuracy", "-40", FIGURES[6]),
        (f"{DDPM}/align_uniform/epoch2.csv", 1, "alignment", "-3", FIGURES[3]),
        (f"{DDPM}/align_uniform/epoch2.csv", 1, "uniformity", "5", FIGURES[3]),
    ],
)
def test_case1_a_csv_value_out_of_range_stops_planning(
    smoke_run,  # noqa: F811
    name,
    row,
    column,
    value,
    readers,
):
    stops_while_planning(
        smoke_run, name, set_cell(row, column, value), readers, f"column '{column}' row {row}"
    )


def test_case1_a_grid_csv_that_disagrees_with_its_choice_stops_planning(smoke_run):  # noqa: F811
    """A grid cell raised above the chosen one, in range: the choice JSON names another cell."""
    grid = (smoke_run / f"{EDM}/grid/epoch4.csv").read_text().splitlines()
    choice = json.loads((smoke_run / f"{EDM}/grid/epoch4.json").read_text())
    columns = grid[0].split(",")

    def cell(line: str) -> tuple[int, int]:
        values = line.split(",")
        return int(values[columns.index("layer")]), int(values[columns.index("t")])

    # a cell other than the chosen one (the choice moves with the smoke config's probes)
    row = next(
        k for k, line in enumerate(grid[1:], 1) if cell(line) != (choice["layer"], choice["t"])
    )
    output = stops_while_planning(
        smoke_run,
        f"{EDM}/grid/epoch4.csv",
        set_cell(row, "test_accuracy", "99.5"),
        [*REPORT, *FIGURES[2]],
        "the grid CSV and its choice disagree",
    )
    assert re.search(rf"{EDM}/grid/epoch4\.json: key '(layer|t)' is \d+, but the best", output)


def test_case2_a_result_of_another_run_and_stage_stops_planning(smoke_run):  # noqa: F811
    """`cp digits_ddpm/finetune/epoch2.json digits_ddpmpp_edm/linear/epoch4.json`."""
    foreign = (smoke_run / f"{DDPM}/finetune/epoch2.json").read_bytes()
    stops_while_planning(
        smoke_run,
        f"{EDM}/linear/epoch4.json",
        lambda path: path.write_bytes(foreign),
        [*REPORT, *FIGURES[5], "results/table3.csv", "results/table3.md"],
        "key 'created_by' is 'finetune'",
    )


def test_case3_a_grid_choice_of_layer_99_stops_planning(smoke_run):  # noqa: F811
    """Its readers (figure2, and the scratch, probe, fine-tuning and noisy jobs of the run)
    used to fail after Snakemake had deleted their outputs."""
    readers = [f"{DDPM}/scratch.json", f"{DDPM}/finetune/epoch2.json", *FIGURES[2]]
    stops_while_planning(
        smoke_run, f"{DDPM}/grid/epoch2.json", set_json(layer=99), readers, "key 'layer'", "99"
    )


def test_case4_a_nan_accuracy_in_a_per_t_grid_record_stops_planning(smoke_run):  # noqa: F811
    def nan_accuracy(path: Path) -> None:
        text = path.read_text()
        start = text.index('"test_accuracy": ')
        end = text.index("\n", start)
        path.write_text(text[:start] + '"test_accuracy": NaN' + text[end:])

    readers = [f"{DDPM}/grid/epoch2.csv", f"{DDPM}/grid/epoch2.json", f"{DDPM}/scratch.json"]
    stops_while_planning(
        smoke_run,
        f"{DDPM}/grid_timesteps/epoch2/t1.json",
        nan_accuracy,
        [*readers, *FIGURES[2]],
        "rows[0] key 'test_accuracy' must be finite",
    )


def fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [(fifo, "is a FIFO"), (dev_zero, "is a character device (a symlink to /dev/zero)")],
)
def test_case5_a_fifo_or_dev_zero_at_a_result_path_stops_planning(
    smoke_run,  # noqa: F811
    damage,
    problem,
):
    stops_while_planning(
        smoke_run,
        f"{EDM}/linear/epoch4.json",
        damage,
        [*REPORT, *FIGURES[5], "results/table3.csv", "results/table3.md"],
        problem,
    )


def test_every_result_of_the_smoke_run_keeps_its_contract(smoke_run, monkeypatch):  # noqa: F811
    """What the writers wrote passes what planning checks, with each run's decoder layer count
    and noise levels (the bounds the rules pass to verified_result)."""
    runs = SMOKE_CONFIG["pretraining"]
    checked = set()
    monkeypatch.chdir(smoke_run)  # relative paths, as Snakemake's
    for path in sorted(Path("results").rglob("*")):
        place = locate(path)
        if place is None:
            continue
        run = runs.get(place.run, {})
        layers = decoder_layer_count(run["network"]) if run else None
        levels = run.get("evaluation", {}).get("steps")
        assert verified_result(str(path), layers=layers, levels=levels) == str(path)
        check_written(path, path.read_text())  # what the writer would accept again
        checked.add(place.kind)
    assert checked == {
        "probe", "accuracy", "fid", "pixel_probe", "grid_choice", "grid_timestep", "grid",
        "align_uniform", "noisy",
    }  # fmt: skip
