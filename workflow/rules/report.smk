# The paper's tables and figures (Tables 2-4, 6-9, Figures 2-6) and the label-free layer choice,
# built from the result files only; `snakemake --report` collects them with their captions.
# Which run stands for which of the paper's models is `tables.models` (Tables 2-4, 6-9, Figures
# 5-6) and `figures.*` (label -> run for Figures 2-4); a missing result is written as "not run".

rule table2:
    input:
        files_in(comparison_results("table2")),
    output:
        csv=report("results/table2.csv", caption="../report/table2.rst", category="Tables"),
        md="results/table2.md",
    params:
        results=comparison_results("table2"),
    log:
        "logs/table2.log",
    benchmark:
        "logs/table2.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/table2.py"


rule table3:
    input:
        files_in(comparison_results("table3")),
    output:
        csv=report("results/table3.csv", caption="../report/table3.rst", category="Tables"),
        md="results/table3.md",
    params:
        results=comparison_results("table3"),
    log:
        "logs/table3.log",
    benchmark:
        "logs/table3.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/table3.py"


rule table4:
    input:
        files_in(comparison_results("table4")),
    output:
        csv=report("results/table4.csv", caption="../report/table4.rst", category="Tables"),
        md="results/table4.md",
    params:
        results=comparison_results("table4"),
    log:
        "logs/table4.log",
    benchmark:
        "logs/table4.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/table4.py"


rule table6:
    output:
        csv=report("results/table6.csv", caption="../report/table6.rst", category="Tables"),
        md="results/table6.md",
    params:
        columns=settings_columns("linear_probe"),
    log:
        "logs/table6.log",
    benchmark:
        "logs/table6.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/table6.py"


rule table7:
    output:
        csv=report("results/table7.csv", caption="../report/table7.rst", category="Tables"),
        md="results/table7.md",
    params:
        columns=settings_columns("finetune"),
    log:
        "logs/table7.log",
    benchmark:
        "logs/table7.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/table7.py"


rule table8:
    output:
        csv=report("results/table8.csv", caption="../report/table8.rst", category="Tables"),
        md="results/table8.md",
    params:
        columns=settings_columns("scratch"),
    log:
        "logs/table8.log",
    benchmark:
        "logs/table8.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/table8.py"


rule table9:
    input:
        files_in(table9_columns()),
        [path.replace(".csv", ".json") for path in files_in(table9_columns())],
    output:
        csv=report("results/table9.csv", caption="../report/table9.rst", category="Tables"),
        md="results/table9.md",
    params:
        columns=table9_columns(),
    log:
        "logs/table9.log",
    benchmark:
        "logs/table9.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/table9.py"


rule layer_choice:
    input:
        files_in(layer_choice_runs()),
    output:
        csv=report(
            "results/layer_choice.csv", caption="../report/layer_choice.rst", category="Tables"
        ),
        md="results/layer_choice.md",
    params:
        runs=layer_choice_runs(),
    log:
        "logs/layer_choice.log",
    benchmark:
        "logs/layer_choice.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/layer_choice.py"


rule figure2:
    input:
        files_in(figure2_grids()),
    output:
        png=report("results/figure2.png", caption="../report/figure2.rst", category="Figures"),
        pdf="results/figure2.pdf",
    params:
        grids=figure2_grids(),
        paper=figure2_paper(),
        source=figure_source(FIGURES.get("figure2", {}).values()),
    log:
        "logs/figure2.log",
    benchmark:
        "logs/figure2.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/figure2.py"


rule figure3:
    input:
        files_in(figure3_series()),
    output:
        png=report("results/figure3.png", caption="../report/figure3.rst", category="Figures"),
        pdf="results/figure3.pdf",
    params:
        series=figure3_series(),
        source=figure_source(FIGURES.get("figure3", {}).values()),
    log:
        "logs/figure3.log",
    benchmark:
        "logs/figure3.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/figure3.py"


rule figure4:
    input:
        files_in(figure4_series()),
    output:
        png=report("results/figure4.png", caption="../report/figure4.rst", category="Figures"),
        pdf="results/figure4.pdf",
    params:
        series=figure4_series(),
        source=figure_source(FIGURES.get("figure4", {}).values(), fid=True),
    log:
        "logs/figure4.log",
    benchmark:
        "logs/figure4.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/figure4.py"


rule figure5:
    input:
        files_in(figure5_panels()),
    output:
        png=report("results/figure5.png", caption="../report/figure5.rst", category="Figures"),
        pdf="results/figure5.pdf",
    params:
        panels=figure5_panels(),
        source=figure_source([r for _, r in model_runs() if "fid" in evaluation(r)], fid=True),
    log:
        "logs/figure5.log",
    benchmark:
        "logs/figure5.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/figure5.py"


rule figure6:
    input:
        files_in(figure6_panels()),
    output:
        png=report("results/figure6.png", caption="../report/figure6.rst", category="Figures"),
        pdf="results/figure6.pdf",
    params:
        panels=figure6_panels(),
        source=figure_source([r for _, r in model_runs() if "noisy" in evaluation(r)]),
    log:
        "logs/figure6.log",
    benchmark:
        "logs/figure6.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/figure6.py"
