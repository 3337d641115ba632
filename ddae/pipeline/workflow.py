"""The Snakefile's entry into `ddae.pipeline` (issue 21): check the config in one pass, then
build the objects whose methods the rules call (workflow/rules/*.smk hold rules only).

* `Layout` (`ddae.pipeline.layout`): paths, targets, params slices and resources;
* `PretrainingChain` (`ddae.pipeline.chain`): the pretraining jobs' starts and walltimes;
* `ReportInputs` (`ddae.pipeline.report_inputs`): what each table, figure, the findings and
  results/validation.md read.

Imports no torch: every Snakemake process, cluster jobs included, runs this while it parses.
"""

from __future__ import annotations

from typing import Any

from ddae.pipeline.chain import PretrainingChain
from ddae.pipeline.checks import check_pipeline_config
from ddae.pipeline.layout import Layout
from ddae.pipeline.report_inputs import ReportInputs


def planned_pipeline(
    config: dict[str, Any], workflow: Any, checkpoints: Any
) -> tuple[Layout, PretrainingChain, ReportInputs]:
    """(layout, chain, reports) for the Snakefile's ``config`` after the one validation pass
    (`ddae.pipeline.checks`); ``workflow`` and ``checkpoints`` are Snakemake's globals."""
    config_file = (workflow.configfiles or ["config.yaml"])[-1]
    main = workflow.is_main_process
    check_pipeline_config(config, workflow.basedir, config_file, main_process=main)
    layout = Layout(config, checkpoints)
    # the result files the tables and figures read, checked by the main process (a cluster job
    # builds one table; the files it reads were checked when the run was planned)
    verified = layout.verified_all if main else None
    reports = ReportInputs(layout, verified, config_file, workflow.basedir)
    return layout, PretrainingChain(layout), reports
