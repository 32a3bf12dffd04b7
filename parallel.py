"""
Fully sharded data parallelism for a GPT that does not fit one GPU under DDP: PyTorch's FSDP2
(`fully_shard`; "PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel", 2023,
arXiv:2304.11277) and torch.distributed.checkpoint (DCP) for sharded checkpoints.

Each process keeps 1/world of every parameter, gradient and AdamW moment; a block's full weights
exist only while it runs (all-gathered before, freed after). Checkpoints: every process writes its
shards of the model and optimizer into one directory, which loads on any number of processes (DCP
reshards on load) and consolidates into the single-file checkpoint the other scripts read.

    shard(model)                                    in place, before building the optimizer
    save_sharded(path, model, optimizer, extra)     collective; extra = the checkpoint's other keys
    extra = load_sharded(path, model, optimizer)    collective; any world size
    read_extra(path)                                the other keys alone (a run's config before resuming)
    full_state_dict(model) / load_full_state_dict(model, sd)   rank 0 <-> sharded model (growth)
    consolidate(path) -> {'model', 'optimizer', **extra}       one process, no torch.distributed

One checkpoint file for sample.py / eval.py / grow.py (weights and the other keys, no optimizer):
$ python parallel.py out/last.dcp out/last.pt
"""
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

EXTRA = 'extra.pt'  # the checkpoint's non-tensor keys (config, iter_num, ...), written by rank 0


def shard(model, param_dtype=None):
    """Shard `model` in place over the default process group: one FSDP unit per physical block, and
    the root (embeddings, the tied head, final norm, adapters) as one more. A block that layer_map
    runs at several depths is one module, so it is sharded once and all-gathered at each use; its
    gradients from every use accumulate before the one reduce-scatter. LoRA/IA3 adapters are small
    and are called from inside the blocks, so they stay with the root, gathered for the whole step.
    param_dtype (e.g. torch.bfloat16 on GPUs): the dtype of the gathered weights and of compute;
    the sharded master weights, the optimizer and the gradient reduction stay float32.
    Build the optimizer after this: its parameters are the sharded ones."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for block in model.transformer.h:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def local_bytes(model, optimizer=None):
    """Bytes of parameters (+ optimizer state) this process holds: its shards, or everything."""
    def nbytes(t):
        t = t.to_local() if hasattr(t, 'to_local') else t
        return t.numel() * t.element_size()
    total = sum(nbytes(p) for p in model.parameters())
    if optimizer is not None:
        total += sum(nbytes(v) for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    return total


def _rank():
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier():
    if dist.is_initialized():
        dist.barrier()


def save_sharded(path, model, optimizer, extra):
    """Write a sharded checkpoint directory at `path`, atomically: the shards go to a fresh
    directory beside it and `path` becomes a symlink to it in one rename, so a crash leaves the
    previous checkpoint whole. Collective: every process calls it."""
    path = Path(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    rank, n, error = _rank(), 0, None
    if rank == 0:  # decides the directory name (and any error) for every process
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not path.is_symlink():
            error = f"{path} exists and is not a sharded checkpoint link; move it away"
        while path.with_name(f'{path.name}.{n}').exists():
            n += 1
    if dist.is_initialized():
        box = [n, error]
        dist.broadcast_object_list(box, src=0)
        n, error = box
    if error:
        raise ValueError(error)
    target = path.with_name(f'{path.name}.{n}')
    dcp.save({'model': model_sd, 'optimizer': optim_sd}, checkpoint_id=target)
    if rank == 0:
        torch.save(extra, target / EXTRA)
        link = path.with_name(f'.{path.name}.link')
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
        os.replace(link, path)
        for stale in path.parent.glob(f'{path.name}.*'):  # the replaced checkpoint, and any a crash left
            if stale.name != target.name and stale.name[len(path.name) + 1:].isdigit():
                shutil.rmtree(stale, ignore_errors=True)
    _barrier()


def _check(path):
    path = Path(path)
    if not (path / '.metadata').is_file() or not (path / EXTRA).is_file():
        raise FileNotFoundError(f"no sharded checkpoint at {path} (expected a directory with .metadata and {EXTRA})")
    return path


def load_sharded(path, model, optimizer):
    """Load a sharded checkpoint into `model` and `optimizer` (sharded or not, any number of
    processes: DCP reads the slices each process needs). Returns the checkpoint's other keys."""
    path = _check(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {'model': model_sd, 'optimizer': optim_sd}
    with warnings.catch_warnings():  # one process reading every shard is intended here
        warnings.filterwarnings('ignore', message='torch.distributed is disabled')
        dcp.load(state, checkpoint_id=path, no_dist=not dist.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=state['model'], optim_state_dict=state['optimizer'])
    return read_extra(path)


def read_extra(path):
    """The checkpoint's keys other than model and optimizer."""
    return torch.load(_check(path) / EXTRA, weights_only=True)


def consolidate(path):
    """The whole checkpoint in one process: {'model': full state dict, 'optimizer': full optimizer
    state keyed by parameter name, **extra}. Holds every tensor in memory; run it on one process."""
    path = _check(path)
    state = {}  # the planner fills it with whatever the checkpoint holds (as dcp_to_torch_save does)
    _load_state_dict(state, storage_reader=dcp.FileSystemReader(path), planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    return {**read_extra(path), **state}


def full_state_dict(model):
    """The full, unsharded model state dict on rank 0 (CPU tensors); {} on the other ranks. Collective."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model, state_dict):
    """Load rank 0's full state dict into a sharded model (the other ranks pass {}). Collective."""
    set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


if __name__ == '__main__':
    import sys
    from checkpoint import save_checkpoint
    if len(sys.argv) != 3:
        sys.exit("usage: python parallel.py SHARDED_CHECKPOINT_DIR OUT.pt")
    try:
        ckpt = consolidate(sys.argv[1])
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    ckpt.pop('optimizer')  # keyed by parameter name; resuming reads the sharded directory
    save_checkpoint(ckpt, sys.argv[2])
    print(f"wrote {sys.argv[2]}")
