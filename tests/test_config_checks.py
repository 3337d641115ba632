"""Every value a job reads is checked before any job runs, naming the key (issue 15, item 2);
the same checks protect direct library use."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ddae.config_checks import check_config
from ddae.configs import ConfigError
from ddae.networks import build_network
from ddae.training import normalize_run

REPO = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((REPO / "tests/smoke/config.yaml").read_text())


def smoke() -> dict:
    return json.loads(json.dumps(SMOKE))  # unshared YAML aliases


def run(config: dict, name: str) -> dict:
    return config["pretraining"][name]


CASES = {
    "float-epoch": (
        lambda c: run(c, "digits_ddpm").update(epochs=[1.0, 2]),
        r"pretraining\.digits_ddpm\.epochs\[0\]: expected an integer",
    ),
    "negative-epoch": (
        lambda c: run(c, "digits_ddpm").update(epochs=[-1, 2]),
        r"pretraining\.digits_ddpm\.epochs\[0\]: must be at least 0, got -1",
    ),
    "nan-lr": (
        lambda c: run(c, "digits_ddpm")["training"].update(lr=math.nan),
        r"pretraining\.digits_ddpm\.training\.lr: expected a finite number",
    ),
    "adam-betas": (
        lambda c: run(c, "digits_ddpm")["training"].update(adam_betas=[1.5, -1]),
        r"pretraining\.digits_ddpm\.training: adam_betas must lie in \[0, 1\)",
    ),
    "beta-order": (
        lambda c: run(c, "digits_ddpm")["framework"].update(beta_min=0.02, beta_max=1e-4),
        r"pretraining\.digits_ddpm\.framework: need 0 < beta_min < beta_max",
    ),
    "sigma-order": (
        lambda c: run(c, "digits_ddpmpp_edm")["framework"].update(sigma_min=90.0),
        r"pretraining\.digits_ddpmpp_edm\.framework: need 0 < sigma_min < sigma_max",
    ),
    "augment-p": (
        lambda c: (
            run(c, "digits_ddpmpp_edm")["network"].update(augment_dim=0),
            run(c, "digits_ddpmpp_edm")["training"].update(augment_p=0.12),
        ),
        r"pretraining\.digits_ddpmpp_edm\.training\.augment_p: EDM augmentation needs",
    ),
    "dit-heads": (
        lambda c: run(c, "digits_dit")["network"].update(num_heads=5),
        r"pretraining\.digits_dit\.network: hidden_size \d+ is not divisible by num_heads 5",
    ),
    "wrn-depth": (
        lambda c: c["supervised"]["digits"]["network"].update(depth=12),
        r"supervised\.digits\.network: depth 12 is not 6n \+ 4",
    ),
    "attn-resolution": (
        lambda c: run(c, "digits_ddpm")["network"].update(attn_resolutions=[7]),
        r"pretraining\.digits_ddpm\.network: attn_resolutions \[7\] are not among",
    ),
    "probe-lr": (
        lambda c: run(c, "digits_ddpm")["evaluation"]["linear_probe"].update(epochs=0.5),
        r"pretraining\.digits_ddpm\.evaluation\.linear_probe\.epochs: expected an integer",
    ),
    "noisy-framework": (
        lambda c: c["supervised"]["digits"]["noisy"]["vp"].update(beta_max=math.inf),
        r"supervised\.digits\.noisy\.vp\.beta_max: expected a finite number",
    ),
}


def test_the_smoke_and_paper_configs_pass():
    check_config(SMOKE)
    check_config(yaml.safe_load((REPO / "config.yaml").read_text()))


@pytest.mark.parametrize("case", CASES)
def test_bad_value_is_named(case):
    edit, message = CASES[case]
    config = smoke()
    edit(config)
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_library_use_gets_the_same_checks():
    spec = {**run(SMOKE, "digits_ddpm")["network"], "attn_resolutions": [7]}
    with pytest.raises(ConfigError, match="attn_resolutions"):
        build_network(spec)
    bad = {**run(SMOKE, "digits_ddpm"), "training": {"lr": math.nan}}
    with pytest.raises(ConfigError, match="finite"):
        normalize_run({k: bad[k] for k in ("network", "framework", "training")})


def test_snakemake_dry_run_stops_on_a_float_epoch(tmp_path):
    config = smoke()
    CASES["float-epoch"][0](config)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    result = subprocess.run(
        [*command, "-d", str(tmp_path), "-n"], cwd=REPO, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(CASES["float-epoch"][1], output), output[-3000:]
    assert "MissingInputException" not in output
