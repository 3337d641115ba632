# The validation target (issue 24): `snakemake --cores all results/validation.md` checks the
# paper's headline numbers from the official checkpoints, PASS/FAIL per number with its
# tolerance (ddae.validation): the EDM and DDPM checkpoints' linear probes at Table 9's pairs
# with Table 6's protocol, and the EDM checkpoint's FID. No grid search, fine-tuning or
# pretraining: the probes are rule linear_probe at a pair named in the path
# (linear/layer<L>_t<T>/epoch<E>.json, ddae.probe_pairs), the FID is Table 2's sample_fid job.
# A run's own probe (Tables 2-3) at the same pair, fixed or chosen by its grid, reuses the
# named-pair result instead of probing again, and the reverse.

localrules:
    validation,


use rule linear_probe as linear_probe_at_pair with:
    input:
        unpack(layout.source_files),
        checkpoint=layout.checkpoint_input,
        choice=[],  # the pair is the path's, never a grid search's
    output:
        json=layout.stage_output("linear_probe", file="named_pair"),
        metrics=layout.stage_output("linear_probe", ".metrics.jsonl", "named_pair"),
    wildcard_constraints:
        layer=r"\d+",
        t=r"\d+",
    params:
        **layout.stage_params("linear_probe"),
        layer_t=lambda wildcards: {"layer": int(wildcards.layer), "t": int(wildcards.t)},
        steps=layout.evaluation_steps,
    log:
        "logs/{dataset}/{run}/linear_probe_layer{layer}_t{t}_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/linear_probe_layer{layer}_t{t}_epoch{epoch}.benchmark.tsv"


rule validation:
    input:
        unpack(reports.validation_results),
    output:
        md="results/validation.md",
        json="results/validation.json",
    params:
        plan=lambda wildcards: reports.validation_plan(),
        benchmarks=lambda wildcards: reports.validation_benchmarks(rules),
    log:
        "logs/validation.log",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/validation.py"
