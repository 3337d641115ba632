"""The paper's tables and figures from the pipeline's result files (Tables 2–9, Figures 2–6,
the label-free layer choice of Sec. 3.3) and the summary a run ends with.

* `ddae.report.registry`: every table and figure by name, its writer and outputs (one
  workflow rule per entry, one script).
* `ddae.report.reference`: the paper's values (``ddae/reference/paper_results.yaml``) and
  helpers the tables share.
* `ddae.report.comparison`: Tables 2–4; `ddae.report.table5`: Table 5;
  `ddae.report.settings`: Tables 6–8; `ddae.report.table9`: Table 9 and the grid search's
  winner; `ddae.report.layer_choice`: the label-free layer choice; `ddae.report.figures`:
  Figures 2–6; `ddae.report.run_summary`: the lines a successful run ends with.

This package imports nothing itself: the Snakefile reads the registry on every parse, and the
writers' modules (pandas, matplotlib, torch) are imported only when a table is written.
"""
