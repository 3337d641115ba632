# ddae-repro: "Denoising Diffusion Autoencoders are Unified Self-supervised Learners"
# (Xiang et al., ICCV 2023), from dataset download to the paper's tables and figures.
#
#   snakemake --cores all                          everything in config.yaml (the paper)
#   snakemake --cores all results/table5.csv       one table
#   snakemake --cores all results/validation.md   the paper's headline numbers, PASS/FAIL (README)
#   snakemake --cores all --directory tests/smoke  the bundled small run (CPU, ~8 minutes)
#   snakemake --profile profiles/slurm             on a SLURM cluster (README: `--profile slurm`)
#   snakemake --report report.html                 the HTML report, written to the working directory
#
# Stages live in workflow/rules/ in DAG order; the logic lives in the `ddae` package.

import gc
import os

from snakemake.utils import min_version

# Snakemake's modules stay loaded for the whole process: frozen, the garbage collector no longer
# re-scans them in every collection while the rules are evaluated for each job. Paired dry runs
# on config.yaml: 0.7 CPU s less of about 4 (issue 21, benchmarks/planning_time.py), the same
# peak memory.
gc.freeze()

from ddae.pipeline.workflow import planned_pipeline
from ddae.report.run_summary import run_summary

min_version("9.0")

# Jobs import the `ddae` package of this checkout, also inside conda environments (envs/).
os.environ.update(
    PYTHONPATH=os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))
)


configfile: "config.yaml"


# The config checked in one pass (ddae.pipeline.checks: a mistake stops here with one message
# naming the key and its line in config.yaml), then the paths, params and targets every rule
# reads: `layout` (ddae.pipeline.layout), `pretraining` (the pretraining chain), `reports` (tables,
# figures, findings, validation).
layout, pretraining, reports = planned_pipeline(config, workflow, checkpoints)


# GPU jobs take one `gpu_slot` each; profiles/default caps the slots at 1 so that a workstation
# runs one GPU job at a time. The slot is a "local" resource, so cluster submissions are not
# throttled by it, and `gpu` itself is never capped (a 4-GPU job still asks SLURM for 4).
resource_scopes:
    gpu_slot="local",


# `snakemake --report report.html` (written into the working directory): this page opens it.
report: "workflow/report/workflow.rst"


include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/official.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/findings.smk"
include: "workflow/rules/validation.smk"


rule all:
    input:
        layout.all_pretraining_checkpoints(),
        layout.evaluation_targets(),
        reports.targets(),
    default_target: True


onsuccess:
    print(run_summary(reports.targets(), ".", workflow.overwrite_workdir))
