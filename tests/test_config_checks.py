"""Every value a job reads is checked before any job runs, naming the key (issue 15, item 2);
the same checks protect direct library use. Every size has an upper bound (issue 23, item 5)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ddae.config_bounds import (
    BOUND_FACTOR,
    BOUNDS,
    COUNT_BOUNDS,
    bound_of,
    check_config_sizes,
)
from ddae.config_checks import check_config
from ddae.config_messages import config_mistakes_reported
from ddae.configs import ConfigError
from ddae.networks import build_network
from ddae.settings.pretraining import normalize_run

REPO = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((REPO / "tests/smoke/config.yaml").read_text())
PAPER_TEXT = (REPO / "config.yaml").read_text()
PAPER = yaml.safe_load(PAPER_TEXT)


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
    "finetune-adam-betas": (  # issue 23, item 7: torch.optim.Adam refused it at job start
        lambda c: run(c, "digits_ddpm")["evaluation"]["finetune"].update(adam_betas=[0.9, 1.0]),
        r"pretraining\.digits_ddpm\.evaluation\.finetune\.adam_betas: \[0\.9, 1\.0\] must lie in "
        r"\[0, 1\)",
    ),
    "wrn-adam-betas": (
        lambda c: c["supervised"]["digits"]["noisy"]["training"].update(adam_betas=[-0.1, 0.9]),
        r"supervised\.digits\.noisy\.training\.adam_betas: \[-0\.1, 0\.9\] must lie in",
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


# --- size bounds (ddae.config_bounds) --------------------------------------------------------


def paper() -> dict:
    return json.loads(json.dumps(PAPER))


def evaluation(config: dict, name: str) -> dict:
    return run(config, name)["evaluation"]


def test_the_configs_sizes_are_within_their_bounds():
    check_config_sizes(PAPER)
    check_config_sizes(SMOKE)


# Settings that are no sizes (or are bounded by another key): every other integer of the schema
# needs a bound, so that a new size key cannot be added without one.
NOT_SIZES = {
    "seed",
    "label_dim",  # always 0
    "attn_resolutions",  # among the network's resolutions (ddae.configs)
    "start",  # grid_t: within 1..steps (ddae.paper_shape), counted by GRID_TIMESTEPS
    "stop",
    "every",
    "layer",  # layer_t: within the decoder blocks and 1..steps (ddae.paper_shape)
    "t",
}


def schema_integer_keys(schema: dict) -> set[str]:
    """Names of the integer (and integer list) properties of the schema, outside `tables`
    (the paper's Table 5 values, shown beside ours)."""
    found = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for name, spec in (node.get("properties") or {}).items():
                items = spec.get("items") or {}
                if (
                    "integer" in (spec.get("type"), items.get("type"))
                    or spec.get("$ref") == "#/$defs/int_list"
                ):
                    found.add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    sections = {k: v for k, v in schema["properties"].items() if k != "tables"}
    walk({**schema, "properties": sections})
    return found


def test_every_integer_of_the_schema_is_bounded_or_no_size():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    patterns = [bound.pattern for bound in (*BOUNDS, *COUNT_BOUNDS)]
    bounded = {part for pattern in patterns for part in pattern.split(".") if "*" not in part}
    unbounded = schema_integer_keys(schema) - bounded - NOT_SIZES
    assert not unbounded


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        (("pretraining", "cifar10_edm", "evaluation", "steps"), 10_000),
        (("pretraining", "cifar10_edm", "evaluation", "fid", "steps"), 10_000),
        (("pretraining", "cifar10_edm", "evaluation", "fid", "samples"), 500_000),
        (("pretraining", "cifar10_edm", "epochs", 0), 40_000),
        (("pretraining", "cifar10_ddpm", "framework", "timesteps"), 10_000),
        (("pretraining", "cifar10_edm", "evaluation", "features", "views"), 100),
        (("pretraining", "cifar10_edm", "evaluation", "finetune", "epochs"), 2000),
        (("pretraining", "cifar10_dit", "evaluation", "latents", "image_size"), 2560),
        (("pretraining", "cifar10_dit", "network", "hidden_size"), 11_520),
        (("supervised", "cifar10", "training", "batch_size"), 5120),
        (("datasets", "cifar10", "resolution"), 2560),
        (("fid", "batch_size"), 5120),
    ],
)
def test_a_size_is_refused_just_above_its_bound(path, limit):
    config = paper()
    *parents, key = path
    node = config
    for part in parents:
        node = node[part]
    node[key] = limit
    check_config_sizes(config)
    node[key] = limit + 1
    with pytest.raises(
        ConfigError, match=rf"^{re.escape(path[0])}.*: {limit + 1} is above"
    ) as error:
        check_config_sizes(config)
    assert error.value.key == path


def first_matching_bound(path: tuple) -> object:
    """The definition `bound_of` implements: the first of BOUNDS whose pattern matches the whole
    path (``*`` one key or index, ``**`` any number of them), tried against every pattern."""

    def matches(pattern: list[str], rest: tuple) -> bool:
        if not pattern:
            return not rest
        if pattern[0] == "**":
            return any(matches(pattern[1:], rest[i:]) for i in range(len(rest) + 1))
        return bool(rest) and pattern[0] in ("*", str(rest[0])) and matches(pattern[1:], rest[1:])

    return next((b for b in BOUNDS if matches(b.pattern.split("."), path)), None)


def leaf_paths(node, path=()):
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in leaf_paths(value, (*path, key))]
    if isinstance(node, list):
        return [p for i, value in enumerate(node) for p in leaf_paths(value, (*path, i))]
    return [path]


def test_the_bound_lookup_by_last_key_is_the_first_matching_pattern():
    """`bound_of` only tries the patterns that can end in the path's last key: the same bound
    for every key path of both configs, each of its tails and heads, and odd keys."""
    paths = {
        sub
        for config in (PAPER, SMOKE)
        for path in leaf_paths(config)
        for i in range(len(path) + 1)
        for sub in (path[i:], path[:i])
    }
    paths |= {("epochs",), ("channel_mult",), ("x", "channel_mult", 7), ("*",), ("a.b", "gpus")}
    assert len(paths) > 1000
    looked_up = {path: bound_of(path) for path in paths}
    assert looked_up == {path: first_matching_bound(path) for path in paths}
    assert sum(bound is not None for bound in looked_up.values()) > 300


def test_the_dag_counts_are_bounded_without_building_them():
    config = paper()
    evaluation(config, "cifar10_edm").update(steps=10_000, grid_t={"start": 1, "stop": 500})
    evaluation(config, "cifar10_edm")["grid_t"]["every"] = 1
    check_config_sizes(config)
    evaluation(config, "cifar10_edm")["grid_t"]["stop"] = 10_000  # 10,000 per-t jobs
    with pytest.raises(ConfigError, match=r"evaluation\.grid_t: a grid of 10000 is above the "):
        check_config_sizes(config)
    config = paper()
    run(config, "cifar10_ddpm_t64")["epochs"] = list(range(1, 62))
    with pytest.raises(ConfigError, match=r"t64\.epochs: a list of 61 is above the bound 60"):
        check_config_sizes(config)
    config = paper()
    run(config, "cifar10_ddpm_t64")["segment_epochs"] = 2  # 2000 epochs: 1000 jobs
    check_config_sizes(config)
    run(config, "cifar10_ddpm_t64")["segment_epochs"] = 1
    with pytest.raises(ConfigError, match=r"segment_epochs: 2000 epochs in jobs of 1 make 2000"):
        check_config_sizes(config)
    assert BOUND_FACTOR == 10


def test_a_bound_inside_a_yaml_anchor_names_the_anchor_and_its_line(tmp_path, capsys):
    """DDIM's FID block is one anchor (&ddim_fid) shared by eight runs: the message names the
    block the user edits, with its line, not the first run that aliases it."""
    text = PAPER_TEXT.replace("steps: 100             #", "steps: 1000000000      #", 1)
    assert text != PAPER_TEXT
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(SystemExit), config_mistakes_reported(tmp_path / "config.yaml"):
        check_config_sizes(yaml.safe_load(text))
    message = capsys.readouterr().err
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "1000000000" in row)
    assert "pretraining.cifar10_ddpm.evaluation.fid.steps: 1000000000 is above" in message
    assert f"(line {line})" in message and "the YAML anchor &ddim_fid, used by 8 runs" in message


def set_key(config: dict, path: tuple, value) -> None:
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


DRY_RUN_CASES = {  # issue 23, item 5: each planned 477 jobs, or ran out of memory planning
    "edm-steps": (
        "config.yaml",
        {("pretraining", "cifar10_edm", "evaluation", "steps"): 10**9},
        "pretraining.cifar10_edm.evaluation.steps: 1000000000 is above the bound 10000",
    ),
    "heun-fid-steps": (
        "config.yaml",
        {("pretraining", "cifar10_edm", "evaluation", "fid", "steps"): 10**9},
        "pretraining.cifar10_edm.evaluation.fid.steps: 1000000000 is above the bound 10000",
    ),
    "grid-every-step": (
        "config.yaml",
        {
            ("pretraining", "cifar10_edm", "evaluation", "steps"): 10**6,
            ("pretraining", "cifar10_edm", "evaluation", "grid_t"): {
                "start": 1,
                "stop": 10**6,
                "every": 1,
            },
        },
        "pretraining.cifar10_edm.evaluation.steps: 1000000 is above the bound 10000",
    ),
    "finetune-adam-betas": (  # issue 23, item 7
        "tests/smoke/config.yaml",
        {("pretraining", "digits_ddpm", "evaluation", "finetune", "adam_betas"): [0.9, 1.0]},
        "pretraining.digits_ddpm.evaluation.finetune.adam_betas: [0.9, 1.0] must lie in [0, 1)",
    ),
}


@pytest.mark.parametrize("case", DRY_RUN_CASES)
def test_snakemake_dry_run_stops_on_an_absurd_size_naming_the_key(tmp_path, case):
    source, edits, message = DRY_RUN_CASES[case]
    config = json.loads(json.dumps(yaml.safe_load((REPO / source).read_text())))
    for path, value in edits.items():
        set_key(config, path, value)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    result = subprocess.run(
        [*command, "-d", str(tmp_path), "-n"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,  # before the bounds, the grid case planned 10^6 jobs until out of memory
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert f"Error in the config: config.yaml: {message}" in output, output[-3000:]
    assert "Traceback" not in output and "MemoryError" not in output
