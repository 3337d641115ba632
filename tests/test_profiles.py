"""`snakemake --profile slurm`, as users type it, works after README.md's one set-up step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def setup_command() -> str:
    """README's set-up line for the short profile name (the `ln -s` into ~/.config/snakemake)."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.+?)\n```", readme, flags=re.S)
    return next(block for block in blocks if "~/.config/snakemake/slurm" in block)


def dry_run(cwd: Path, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(cwd)]
    command += ["--profile", "slurm", "-n", "results/table5.csv"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_short_profile_name_works_after_the_readme_setup(tmp_path):
    home, workdir = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    workdir.mkdir()
    (workdir / "config.yaml").write_text((REPO / "config.yaml").read_text())
    env = {**os.environ, "HOME": str(home)}
    env.pop("XDG_CONFIG_HOME", None)
    before = dry_run(workdir, env)
    assert before.returncode != 0 and "no profile.yaml (or config.yaml) found" in before.stderr
    subprocess.run(["bash", "-c", setup_command()], cwd=REPO, env=env, check=True)
    assert (home / ".config/snakemake/slurm").resolve() == (REPO / "profiles/slurm").resolve()
    after = dry_run(workdir, env)
    output = after.stdout + after.stderr
    assert after.returncode == 0, output[-3000:]
    assert re.search(r"Using profiles? slurm\b", output) and "rule table5" in output
    assert "mem_mb=8000" in output  # the profile's default-resources apply
