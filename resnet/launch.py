"""Sweeps as jobs, through submitit: one job per run on a Slurm cluster (``launcher='slurm'``), or local processes
(``launcher='local'``, submitit's local executor, which is how this is tested without a cluster).

A job trains its run with ``train``; when the cluster preempts it or its wall time runs out, submitit requeues it
(``TrainJob`` is Checkpointable) and the run resumes from its last checkpoint, exactly. Results land in the same
study folders as a local sweep's, so the notebook and ``python -m resnet plot`` draw them unchanged.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import submitit

from .config import TrainConfig
from .results import finished_meta

LAUNCHERS = ("local", "slurm")


class TrainJob(submitit.helpers.Checkpointable):
    """One run as a job: its settings as run.json holds them, and the results folder."""

    def __call__(self, config: dict, results_dir: str) -> dict:
        from .trainer import train

        return train(TrainConfig.from_dict(config), results_dir, progress=False)


@contextlib.contextmanager
def _importable():
    """The package importable by the jobs (a job's process starts in the submitting process's environment)."""
    root = str(Path(__file__).resolve().parent.parent)
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, before]))
    try:
        yield
    finally:
        os.environ.pop("PYTHONPATH") if before is None else os.environ.update(PYTHONPATH=before)


def submit(configs: list[TrainConfig], results_dir: str | Path = "results", *, launcher: str = "local",
           folder: str | Path | None = None, timeout_min: int = 240, gpus_per_job: int = 1, cpus_per_job: int = 4,
           partition: str | None = None, account: str | None = None, max_running: int | None = None) -> list:
    """Submit one job per run of ``configs`` not finished in ``results_dir``, and return the submitit jobs.

    Conflicts with the results folder are reported before anything is submitted. Job logs go to ``folder``
    (default: ``<results_dir>/jobs``). ``max_running`` caps how many run at once (a Slurm array's parallelism).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    pending = [c for c in configs if finished_meta(c, results_dir) is None]
    if not pending:
        return []
    executor = submitit.AutoExecutor(folder=Path(folder or Path(results_dir) / "jobs"), cluster=launcher,
                                     **({"slurm_max_num_timeout": 100} if launcher == "slurm" else {}))
    params = {"timeout_min": timeout_min, "gpus_per_node": gpus_per_job, "cpus_per_task": cpus_per_job,
              "name": "resnet"}
    if launcher == "slurm":
        params |= {k: v for k, v in {"slurm_partition": partition, "slurm_account": account,
                                     "slurm_array_parallelism": max_running}.items() if v is not None}
    executor.update_parameters(**params)
    with _importable(), executor.batch():
        jobs = [executor.submit(TrainJob(), c.to_dict(), str(results_dir)) for c in pending]
    return jobs


def wait(jobs: list) -> list[dict]:
    """Each job's result (the run's metadata), in order; failed jobs are named with their logs, after all ended."""
    metas, failed = [], []
    for job in jobs:
        try:
            metas.append(job.result())
        except Exception as e:  # noqa: BLE001 - submitit raises the job's own error, or its own on a lost job
            failed.append(f"job {job.job_id} ({type(e).__name__}; log {job.paths.stderr})")
    if failed:
        raise RuntimeError(f"runs failed: {'; '.join(failed)}")
    return metas
