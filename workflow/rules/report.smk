# The paper's tables and figures (Tables 2-9, Figures 2-6) and the label-free layer choice, built
# from the result files only; `snakemake --report` collects them with their captions. One rule
# per entry of the report registry (ddae.report.registry), named as the entry (table2, ...,
# figure6): its inputs are the result files its params name (ddae.pipeline.report_inputs),
# and every rule runs the one script report.py. Which run stands for which of the paper's models
# is `tables.models` (Tables 2-4, 6-9, Figures 5-6) and `figures.*` (label -> run for Figures
# 2-4); a missing result is written as "not run".

for _entry in reports.entries():
    _params = reports.params(_entry.name)

    rule:
        name:
            _entry.name
        input:
            reports.files_in(_params),
        output:
            **reports.outputs(_entry, report),
        params:
            **_params,
        log:
            f"logs/{_entry.name}.log",
        benchmark:
            f"logs/{_entry.name}.benchmark.tsv",
        conda:
            "../../envs/ddae.yaml"
        script:
            "../scripts/report.py"
