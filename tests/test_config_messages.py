"""A config mistake is one message: the key path and line in config.yaml, the allowed keys, a
"did you mean", and the runs that share a YAML anchor (ddae.config_messages)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ddae.config_messages import check_schema, config_mistakes_reported, load_schema, schema_message
from ddae.configs import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
SMOKE_TEXT = (REPO / "tests" / "smoke" / "config.yaml").read_text()
PAPER_TEXT = (REPO / "config.yaml").read_text()


def message_for(text: str) -> str:
    message = schema_message(yaml.safe_load(text), SCHEMA, text)
    assert message is not None
    return message


def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_valid_configs_give_no_message():
    assert schema_message(yaml.safe_load(PAPER_TEXT), SCHEMA, PAPER_TEXT) is None
    assert schema_message(yaml.safe_load(SMOKE_TEXT), SCHEMA, SMOKE_TEXT) is None


def test_typo_in_a_shared_anchor_names_the_anchor_its_runs_and_the_edited_line():
    text = SMOKE_TEXT.replace(
        "linear_probe: &tiny_linear {epochs: 3", "linear_probe: &tiny_linear {epoch: 3"
    )
    message = message_for(text)
    first, *details = message.splitlines()
    line = line_of(text, "&tiny_linear {epoch:")
    where = "pretraining.digits_ddpm.evaluation.linear_probe.epoch"
    assert first == f"unknown key 'epoch' at {where} (line {line})"
    assert any("allowed keys there:" in d and "epochs" in d and "seed" in d for d in details)
    assert "  did you mean 'epochs'?" in details
    shared = next(d for d in details if "anchor" in d)
    # the definition, its aliases and the blocks that merge it in (`<<: *tiny_linear`)
    users = 1 + SMOKE_TEXT.count("linear_probe: *tiny_linear") + SMOKE_TEXT.count("*tiny_linear,")
    assert SMOKE_TEXT.count("{<<: *tiny_linear,") == 2  # the findings' seed replicates
    assert "&tiny_linear" in shared and f"used by {users} runs: digits_ddpm, " in shared
    assert len(message.splitlines()) <= 5


def test_anchor_used_before_the_first_error_still_names_the_definition():
    # the error is also found under the aliases of later runs; the message names the definition
    text = PAPER_TEXT.replace(
        "      fid: &ddim_fid           #", "      fid: &ddim_fid\n        samplr: ddim #"
    )
    message = message_for(text)
    assert message.startswith("unknown key 'samplr' at pretraining.cifar10_ddpm.evaluation.fid")
    assert "did you mean 'sampler'?" in message and "&ddim_fid" in message
    assert f"(line {line_of(text, 'samplr: ddim')})" in message


def test_unshared_top_level_and_value_errors():
    text = SMOKE_TEXT + "\nfigurs: {}\n"
    message = message_for(text)
    assert message.startswith(f"unknown key 'figurs' at figurs (line {line_of(text, 'figurs')})")
    assert "did you mean 'figures'?" in message and "anchor" not in message
    text = PAPER_TEXT.replace("  extractor: inception", "  extractor: inceptin")
    message = message_for(text)
    assert message.startswith("fid.extractor: 'inceptin' is not one of the allowed values")
    assert "did you mean 'inception'?" in message


def test_check_schema_and_the_reporter(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(
        SMOKE_TEXT.replace("  digits:\n    resolution: 16", "  digits:\n    resolutio: 16")
    )
    with pytest.raises(ConfigError, match="did you mean 'resolution'"):
        check_schema(
            yaml.safe_load(path.read_text()), REPO / "workflow/schemas/config.schema.yaml", path
        )
    with pytest.raises(SystemExit), config_mistakes_reported("config.yaml"):
        raise ConfigError("evaluation.sampler: 'ddmi' is not a sampler")
    err = capsys.readouterr().err
    assert err == "Error in the config: config.yaml: evaluation.sampler: 'ddmi' is not a sampler\n"


def test_snakemake_prints_one_message(tmp_path):
    text = SMOKE_TEXT.replace(
        "linear_probe: &tiny_linear {epochs: 3", "linear_probe: &tiny_linear {epoch: 3"
    )
    (tmp_path / "config.yaml").write_text(text)
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(tmp_path),
        "-n",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if not line.startswith("Using ")]
    assert lines[0].startswith("Error in the config: config.yaml: unknown key 'epoch'")
    assert len(lines) <= 5 and "Snakefile" not in result.stderr and "schema[" not in result.stderr
