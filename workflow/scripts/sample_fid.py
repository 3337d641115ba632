"""Sample a checkpoint's EMA network and score the samples' FID (paper Sec. 4, Figs. 4-5)."""

from ddae.fid import sample_and_score
from ddae.joblog import job_device, logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    sample_and_score(
        checkpoint=sm.input.checkpoint,
        reference_npz=sm.input.reference,
        output_json=sm.output.json,
        grid_png=sm.output.grid,
        sampling=dict(sm.params.sampling),
        extractor=sm.params.extractor,
        weights=sm.input.weights[0] if sm.input.weights else None,
        device=job_device(sm.resources.gpu),
    )
