"""``aeserve train --engine ray``: data-parallel training on a Ray cluster with Ray Train.

The driver makes the one streaming pass over the shards (statistics, counts, samples), then a
``TorchTrainer`` runs ``N`` workers: each builds the same model, wraps its training energy in
DDP (gloo on CPUs, NCCL on GPUs), and streams its own shards (``shards_of``: every N-th of each
epoch's order, the same number of steps on every worker). Every epoch ends with a Ray Train report
whose checkpoint (rank 0's; safetensors and JSON, as ``aeserve.train.checkpoint`` writes) holds
the whole training state, so a failed worker group restarts from the last epoch (``FailureConfig``)
and a run stopped at the driver resumes with ``--resume``. The driver writes one bundle at the end,
the same format as a local run's.

On a cluster of several machines, the shards and ``OUT``'s folder (checkpoints) must be on a file
system every node sees.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from aeserve.errors import AeserveError, BackendUnavailable, InputError, Interrupted
from aeserve.train.checkpoint import load_checkpoint, run_fingerprint, save_checkpoint
from aeserve.train.config import ModelConfig
from aeserve.train.device import Hardware
from aeserve.train.fit import Checkpointing, EnergyLoss, FitConfig, FitResult, fit
from aeserve.train.pipeline import TrainResult
from aeserve.train.registry import build_model
from aeserve.train.shards import Shards, scan
from aeserve.train.streaming import ShardRows, StreamOptions, finish_shards, stream_preprocessing

__all__ = ["train_shards_ray", "ray_storage_dir"]


def ray_storage_dir(checkpoint_dir: Path) -> Path:
    """Where Ray Train keeps a run's reported checkpoints: ``OUT.checkpoint-ray`` beside the bundle."""
    return checkpoint_dir.with_name(checkpoint_dir.name + "-ray").absolute()


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: the model, its DDP-wrapped energy, this worker's shards, ``fit``."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, workers = context.get_world_rank(), context.get_world_size()
    model_config, fit_config = ModelConfig.from_dict(config["model"]), FitConfig(**config["fit"])
    device = ray.train.torch.get_device()
    hardware = Hardware(device=str(device), precision=config["precision"], threads=config["threads"])
    torch.manual_seed(fit_config.seed)
    model = build_model(model_config)
    model.set_preprocessing(torch.tensor(config["shift"]), torch.tensor(config["scale"]), rows=config["rows"])
    with torch.no_grad():
        val = model.preprocess(torch.from_numpy(config["scanned"].val_sample.copy()))
    loss = ray.train.torch.prepare_model(EnergyLoss(model), parallel_strategy_kwargs={
        "find_unused_parameters": model_config.kind == "lvm"})
    source = ShardRows(config["shards"], config["scanned"], fit_config.seed, config["val_fraction"],
                       fit_config.batch_size, config["options"], part=(rank, workers))
    resume = None
    checkpoint = ray.train.get_checkpoint()
    local = Path(tempfile.mkdtemp(prefix="aeserve-ray-"))
    if checkpoint is not None:  # a restarted worker group, or a driver's --resume
        with checkpoint.as_directory() as directory:
            shutil.copytree(directory, local / "resume")
        resume = Checkpointing(local / "resume", resume=True, fingerprint=config["fingerprint"])
    resumed_from: list[int | None] = [None]

    def report(state) -> None:
        metrics = {"epoch": state.epoch, "val_energy": state.history["val_energy"][-1], "resumed_from": resumed_from[0]}
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                save_checkpoint(Path(tmp) / "state", dataclasses.replace(state, fingerprint=config["fingerprint"]))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(Path(tmp) / "state")))
        else:
            ray.train.report(metrics)
        if rank == 0:
            print(f"epoch {state.epoch}/{fit_config.epochs}: train energy {state.history['train_energy'][-1]:.4g}, "
                  f"val energy {metrics['val_energy']:.4g}", flush=True)

    if resume is not None:
        resumed_from[0] = load_checkpoint(resume.directory).epoch
    result = fit(model, source, val, fit_config, hardware=hardware, checkpointing=resume,
                 loss_module=loss, on_state=report)
    ray.train.report({"done": True, "stopped": result.stopped, "best_epoch": result.best_epoch,
                      "rows_per_s": result.rows_per_s * workers, "resumed_from": resumed_from[0]})
    shutil.rmtree(local, ignore_errors=True)


def _latest_checkpoint(storage: Path) -> Path | None:
    """The newest checkpoint Ray Train persisted under ``storage`` (its checkpoint_* folders)."""
    found = [p for p in storage.rglob("checkpoint_*") if (p / "checkpoint.json").is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def train_shards_ray(shards: Shards, out: str | Path, config: ModelConfig, fit_config: FitConfig, *,
                     workers: int = 2, address: str | None = None, max_failures: int = 2,
                     quantile: float = 0.99, val_fraction: float = 0.1, scaling: str = "standard",
                     name: str | None = None, kept_rows: int = 1024, export: bool = True, force: bool = False,
                     options: StreamOptions | None = None, hardware: Hardware | None = None,
                     checkpointing: Checkpointing | None = None,
                     on_scan: Callable[[int], None] | None = None) -> TrainResult:
    """Fit ``config.kind`` on ``shards`` with ``workers`` Ray Train workers (DDP) and write a bundle
    to ``out``. A worker that fails restarts the group from the last epoch's checkpoint, up to
    ``max_failures`` times. ``address``: the Ray cluster (default: RAY_ADDRESS, or a local Ray).
    Rank 0 prints each epoch's energies (Ray forwards worker output to the driver)."""
    try:
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as exc:
        raise BackendUnavailable(f"--engine ray needs Ray Train ({exc.name} is missing): pip install "
                                 "'aeserve[ray-train]'") from None
    out = Path(out)
    if out.exists() and not force:
        raise InputError(f"{out}: already exists; replace it with force=True")
    if len(shards.files) < workers:
        raise InputError(f"{len(shards.files)} shard(s) for {workers} workers: each worker reads its own shards; give "
                         f"at least {workers} files (or fewer --workers)")
    options, hardware = options or StreamOptions(), hardware or Hardware()
    shards = dataclasses.replace(shards, files=tuple(p.absolute() for p in shards.files))  # workers' cwd differs
    checkpointing = checkpointing or Checkpointing(out.with_name(out.name + ".checkpoint"))
    scanned = scan(shards, val_fraction, max_val_rows=options.max_val_rows,
                   sample_rows=max(options.sample_rows, kept_rows), on_rows=on_scan)
    prep = stream_preprocessing(scanned, config.cost, scaling)
    fingerprint = run_fingerprint(config, fit_config, scanned.sha256, val_fraction=val_fraction, scaling=scaling,
                                  shuffle_buffer=options.shuffle_buffer, workers=workers)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    use_gpu = hardware.device.startswith("cuda") or (
        hardware.device == "auto" and ray.cluster_resources().get("GPU", 0) >= workers)
    storage = ray_storage_dir(checkpointing.directory)
    resume_from = None
    if checkpointing.resume:
        load_checkpoint(checkpointing.directory, fingerprint)  # refuse another run's checkpoint here, in one line
        resume_from = ray.train.Checkpoint.from_directory(str(checkpointing.directory.absolute()))
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"model": config.to_dict(), "fit": vars(fit_config), "shift": list(prep.shift),
                           "scale": list(prep.scale), "shards": shards, "scanned": scanned,
                           "rows": shards.specs[0].rows if shards.specs else 0,
                           "val_fraction": val_fraction, "options": options, "precision": hardware.precision,
                           "threads": hardware.threads, "fingerprint": fingerprint},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name=out.name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        resume_from_checkpoint=resume_from)
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        latest = _latest_checkpoint(storage)
        if latest is None:
            raise
        shutil.rmtree(checkpointing.directory, ignore_errors=True)
        shutil.copytree(latest, checkpointing.directory)
        epoch = load_checkpoint(checkpointing.directory).epoch
        raise Interrupted(f"stopped; nothing was written but the checkpoint of epoch {epoch} "
                          f"({checkpointing.directory}); go on with: {checkpointing.command or 'resume=True'}") from None
    except Exception as exc:  # Ray Train's TrainingFailedError: the workers' error, in one line
        raise AeserveError(f"Ray Train failed: {str(exc).strip().splitlines()[-1][:300]}") from None
    state = load_checkpoint(Path(result.checkpoint.path)) if result.checkpoint is not None else None
    if state is None:
        raise AeserveError("Ray Train finished without a checkpoint: no epoch completed")
    model = build_model(config)
    model.load_state_dict(state.best_model)
    model.eval()
    metrics = result.metrics or {}
    history = FitResult(train_energy=state.history["train_energy"], val_energy=state.history["val_energy"],
                        best_epoch=state.best_epoch, stopped=str(metrics.get("stopped", "max epochs")),
                        resumed_from=metrics.get("resumed_from"),
                        rows_per_s=float(metrics.get("rows_per_s", 0.0)))
    with torch.no_grad():
        val_rows = model.preprocess(torch.from_numpy(scanned.val_sample))
        train_sample = model.preprocess(torch.from_numpy(scanned.train_sample))
    bundle = finish_shards(model, shards, scanned, out, config, fit_config, history, prep=prep, val_rows=val_rows,
                           train_sample=train_sample, val_fraction=val_fraction, options=options,
                           kept_rows=kept_rows, quantile=quantile, export=export, force=force, name=name,
                           hardware=hardware, engine={"engine": "ray", "workers": workers})
    shutil.rmtree(storage, ignore_errors=True)
    return bundle
