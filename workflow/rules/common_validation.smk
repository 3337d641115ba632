# Helpers of workflow/rules/validation.smk: what results/validation.md reads. Pure Python, no
# torch. Uses TABLES, PRETRAINING, FID and stage_file of common.smk.

from ddae.validation import benchmark_files, validation_plan

# Rules whose jobs the validation reads; their benchmark files give its times per stage.
VALIDATION_RULES = (
    "download_official_file",
    "download_official_folder",
    "import_official",
    "stand_in_checkpoint",
    "download_dataset",
    "prepare_dataset",
    "download_inception",
    "fid_reference",
    "sample_fid",
    "linear_probe_at_pair",
)


def planned_validation():
    """Per number of results/validation.md: its run, source and result file (ddae.validation);
    a config that cannot give a number stops with one message naming the key."""
    with config_mistakes_reported(CONFIG_FILE):
        return validation_plan(TABLES.get("models", {}), PRETRAINING, stage_file)


def validation_results(wildcards):
    """The result file of each number (the validation rule's named inputs)."""
    return {entry["check"]: entry["result"] for entry in planned_validation()}


def validation_benchmarks():
    """{job: benchmark file} of the jobs behind the validation's numbers."""
    patterns = {name: str(getattr(rules, name).benchmark) for name in VALIDATION_RULES}
    return benchmark_files(planned_validation(), patterns, FID["extractor"])
