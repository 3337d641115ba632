"""FID reference statistics of a dataset's training split (paper Sec. 4)."""

from ddae.fid import write_reference_statistics
from ddae.joblog import job_device, logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    write_reference_statistics(
        train_path=sm.input.train,
        output_npz=sm.output[0],
        extractor=sm.params.extractor,
        weights=sm.input.weights[0] if sm.input.weights else None,
        batch_size=int(sm.params.batch_size),
        device=job_device(sm.resources.gpu),
    )
