# The paper's tables. Each rule receives only the config it reads.


rule table5:
    output:
        csv=report("results/table5.csv", caption="../report/table5.rst", category="Tables"),
        md="results/table5.md",
    params:
        columns=table5_columns(),
    log:
        "logs/table5.log",
    benchmark:
        "logs/table5.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/table5.py"
