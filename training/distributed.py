"""Training on several processes, fastai's way: `learn.distrib_ctx()` under Hugging Face
Accelerate, started by `accelerate launch -m training.train ...` (one process per GPU, or CPU
processes over gloo). Without a launcher every function here is a no-op (one process).

Every process reads the data and builds the same learner (same seed); the fit runs on all of
them, each on its share of every batch (per-process bs = --bs / N, so the effective batch is
--bs, as with one process). Rank 0 alone does what must happen once: the learning-rate finder
(its suggestion is sent to the others), the demo's data, and every write (checkpoint.write;
after the fit every rank leaves the process group, and train.run stops the other ranks before
evaluating and writing the model). A Ctrl-C or SIGTERM stops all ranks after the same batch.
docs/training.md says what was tested and the tolerance against one process.
"""
from __future__ import annotations

import contextlib
import os


def world_size() -> int:
    """The number of training processes (accelerate launch sets WORLD_SIZE; fastai reads it)."""
    from fastai.torch_core import num_distrib
    return max(1, num_distrib())


def is_main() -> bool:
    """Rank 0: the one process that finds the learning rate and writes files."""
    from fastai.torch_core import rank_distrib
    return rank_distrib() == 0


def start() -> None:
    """Join the process group before any data or model exists: NCCL on GPUs, gloo where there
    is none (Accelerate would otherwise run each process alone when `--multi_gpu` finds no GPU:
    it only picks gloo for --cpu, which starts one process). It also sets this rank's GPU,
    which fastai's default_device() then uses for the dataloaders."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState
        PartialState(cpu=not torch.cuda.is_available())


def stop() -> None:
    """Leave the process group, after the fit or at exit (torch warns when a process does not).
    From then on this process is alone: WORLD_SIZE 1, so fastai waits for no other rank (its
    load_learner, which the export's ONNX step calls on rank 0, starts with a barrier)."""
    import torch.distributed as dist
    if world_size() > 1 and dist.is_initialized():
        dist.destroy_process_group()
    if world_size() > 1:
        os.environ["WORLD_SIZE"] = "1"


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any: a signal that reached some ranks stops all of
    them after the same batch (a rank that stopped alone would leave the others waiting in the
    next gradient all-reduce, and rank 0 could not save the checkpoint)."""
    import torch.distributed as dist
    if world_size() == 1 or not dist.is_initialized():
        return flag
    import torch
    t = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def average(tensors: list) -> None:
    """Each tensor replaced, in place, by its mean over the ranks (BatchNorm statistics that
    each rank measured on its own share of the training images)."""
    import torch.distributed as dist
    if world_size() == 1 or not dist.is_initialized():
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= world_size()


def _collective_device() -> str:
    """Where a tensor sent between ranks must live: NCCL sends CUDA tensors, gloo CPU ones."""
    import torch.distributed as dist
    return "cuda" if dist.get_backend() == "nccl" else "cpu"


def main_first(func):
    """func() on rank 0, then on the others (fastai's rank0_first): the demo's data is written
    once, then found complete by the rest."""
    if world_size() == 1:
        return func()
    from fastai.distributed import rank0_first
    return rank0_first(func)


def on_main(func):
    """func() on rank 0 alone, its result sent to every rank: the learning-rate finder runs once,
    not N times, and all ranks train with the same rate."""
    if world_size() == 1:
        return func()
    import torch.distributed as dist
    result = [None]
    if is_main():
        with _alone():
            result = [func()]
    dist.broadcast_object_list(result, src=0)
    return result[0]


@contextlib.contextmanager
def _alone():
    """fastai gathers every loss from all ranks whenever WORLD_SIZE > 1 (torch_core.maybe_gather),
    even outside distrib_ctx; rank 0 working on its own would wait forever for the others."""
    size = os.environ["WORLD_SIZE"]
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        os.environ["WORLD_SIZE"] = size


def per_process_bs(bs: int) -> int:
    """Each process's batch: --bs / N, so N processes take the same steps as one (train.run
    makes --bs a multiple of N)."""
    return max(1, bs // world_size())


@contextlib.contextmanager
def fit_context(learn):
    """fastai's distrib_ctx around the fit when launched with N > 1 processes: the model in
    DistributedDataParallel, each dataloader split across the ranks, losses and metrics
    gathered; each dataloader takes bs / N for the fit (the finder ran at the full bs).
    sync_bn=False: fastai's SyncBatchNorm conversion is not undone after the fit (it would be
    exported) and needs GPUs; each process normalises its own bs / N images instead."""
    if world_size() == 1:
        yield
        return
    _fit_on_cpus_too()
    full = [dl.bs for dl in learn.dls.loaders]
    for dl in learn.dls.loaders:
        dl.bs = per_process_bs(dl.bs)
    try:
        with learn.distrib_ctx(sync_bn=False):
            yield
    finally:
        for dl, bs in zip(learn.dls.loaders, full):
            dl.bs = bs


def _fit_on_cpus_too() -> None:
    """Two spots where fastai's DistributedTrainer assumes GPUs, each replaced by the same code
    made device-neutral: DistributedDL sends rank 0's shuffled order as a CUDA tensor (NCCL needs
    one; gloo needs a CPU tensor), and _wrap_dl reads `model.device`, which a
    DistributedDataParallel model on CPUs does not have (each dataloader keeps its own device,
    the model's: Accelerate set this rank's GPU before the dataloaders were made)."""
    import torch
    import torch.distributed as dist
    from fastai.distributed import DistributedDL, DistributedTrainer

    def _broadcast(self, t, rank):
        t = torch.tensor(t, dtype=torch.long, device=_collective_device())
        dist.broadcast(t, rank)
        return t.cpu().tolist()

    def _wrap_dl(self, dl):
        return dl if isinstance(dl, DistributedDL) else DistributedDL(dl)

    DistributedDL._broadcast = _broadcast
    DistributedTrainer._wrap_dl = _wrap_dl
