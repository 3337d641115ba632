"""Train one run to one checkpoint epoch, on the job's GPUs (torchrun when there are several)."""

from ddae.joblog import job_device, logging_to
from ddae.launch import PretrainingJob, run_pretraining

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    run_pretraining(
        PretrainingJob(
            run=dict(sm.params.run),
            dataset=sm.input.train,
            output=sm.output[0],
            target_epoch=int(sm.wildcards.epoch),
            start=sm.input.start[0] if sm.input.start else None,
            state_dir=sm.params.state_dir,
            metrics=sm.params.metrics,
            processes=max(sm.resources.gpu, 1),
            device=job_device(sm.resources.gpu),
            snapshot_every_seconds=float(sm.resources.snapshot_seconds),
        )
    )
