# The paper's tables. Each rule receives only the config it reads.


def table5_columns():
    """Table 5 columns: each run's network spec and final epoch, with the paper's values."""
    return [
        {
            "label": column["label"],
            "network": PRETRAINING[column["run"]]["network"],
            "epochs": PRETRAINING[column["run"]]["epochs"][-1],
            "paper": column.get("paper", {}),
        }
        for column in TABLES.get("table5", [])
    ]


rule table5:
    output:
        csv="results/table5.csv",
        md="results/table5.md",
    params:
        columns=table5_columns(),
    log:
        "logs/table5.log",
    script:
        "../scripts/table5.py"
