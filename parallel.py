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
    consolidate(path) -> {'model', **extra}         one process, no torch.distributed

A sharded checkpoint may come from anyone, and DCP's own reader unpickles its `.metadata` and its non-tensor
values (the optimizer's hyperparameters) with plain pickle, which runs whatever code the file names. Every read
here goes through SafeReader and SafeLoadPlanner instead: the metadata admits only the classes DCP metadata is
made of, every other value only what torch.load(weights_only=True) admits, and a refusal is one ValueError line.

One checkpoint file for sample.py / eval.py / grow.py (weights and the other keys, no optimizer):
$ python parallel.py out/last.dcp out/last.pt
"""
import io
import os
import pickle
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from checkpoint import check_checkpoint, check_out_path, refusal, safe_torch_load, save_checkpoint

EXTRA = 'extra.pt'  # the checkpoint's non-tensor keys (config, iter_num, ...), written by rank 0
METADATA = '.metadata'  # DCP's index of the shards: every tensor's shape and dtype, and where its slices are stored


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
    state = {'model': get_model_state_dict(model)}
    if optimizer.state:  # a fresh optimizer (just after growth) is saved as none: asking torch for its state
        state['optimizer'] = get_optimizer_state_dict(model, optimizer)  # would take a zero step, and AdamW counts it
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
    dcp.save(state, checkpoint_id=target)
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


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata and nothing else: the globals a pickle may name are the metadata dataclasses,
    the shard-file record, torch.Size, dtypes and layouts, and the checkpoint's path; none of them runs code
    beyond building itself. (Python's documented way to restrict unpickling: find_class.)"""
    ALLOWED = {('torch', 'Size'), ('torch.serialization', '_get_layout'), ('pathlib', 'PosixPath'), ('pathlib', 'WindowsPath'),
               ('torch.distributed.checkpoint.filesystem', '_StorageInfo'),
               *(('torch.distributed.checkpoint.metadata', name) for name in (
                   'Metadata', 'StorageMeta', 'MetadataIndex', 'TensorStorageMetadata', 'BytesStorageMetadata',
                   'ChunkStorageMetadata', 'TensorProperties', '_MEM_FORMAT_ENCODING'))}

    class Refused(pickle.UnpicklingError):
        pass

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED or module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return super().find_class(module, name)
        raise self.Refused(f"{module}.{name}")


class SafeReader(dcp.FileSystemReader):
    """DCP's file reader, with the metadata read by MetadataUnpickler, and every shard file it names required
    to lie in the checkpoint directory. Anything else is refused with one ValueError line naming the file."""

    def read_metadata(self):
        path = Path(self.path) / METADATA
        try:
            with open(path, 'rb') as f:
                metadata = MetadataUnpickler(f).load()
        except MetadataUnpickler.Refused as e:
            raise ValueError(f"cannot read sharded checkpoint {path}: refused for safety: it names {e}, which DCP "
                             f"metadata is not made of, and loading it could run code") from None
        except Exception as e:
            raise ValueError(f"cannot read sharded checkpoint {path}: not DCP metadata (unreadable: {first_line(e)})") from None
        entries, storage = getattr(metadata, 'state_dict_metadata', None), getattr(metadata, 'storage_data', None)
        if not (isinstance(metadata, Metadata) and isinstance(entries, dict) and all(isinstance(k, str) for k in entries)
                and isinstance(storage, dict)):
            raise ValueError(f"cannot read sharded checkpoint {path}: not DCP metadata")
        for info in storage.values():
            name = getattr(info, 'relative_path', None)
            if not isinstance(name, str) or name in ('', '.', '..') or os.path.basename(name) != name:
                raise ValueError(f"cannot read sharded checkpoint {path}: it names a shard file {name!r} outside its directory")
        return metadata


class SafeLoadPlanner(dcp.DefaultLoadPlanner):
    """DCP's default planner, except that a non-tensor value (an optimizer hyperparameter) is read with
    torch.load(weights_only=True) where DefaultLoadPlanner passes weights_only=False."""

    def load_bytes(self, read_item, value):
        try:
            obj = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(f"value {read_item.dest_index.fqn}: {refusal(e)}") from None
        checked = io.BytesIO()  # what weights_only admitted, handed on in the form the default planner reads
        torch.save(obj, checked)
        checked.seek(0)
        super().load_bytes(read_item, checked)


def first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def read_metadata(path):
    """The checkpoint's DCP metadata, read safely; FileNotFoundError if `path` is no sharded checkpoint."""
    path = Path(path)
    if not (path / METADATA).is_file() or not (path / EXTRA).is_file():
        raise FileNotFoundError(f"no sharded checkpoint at {path} (expected a directory with {METADATA} and {EXTRA})")
    return SafeReader(path).read_metadata()


def read_shards(state, path, no_dist):
    """dcp.load through SafeReader and SafeLoadPlanner; a failure on any process is one ValueError line."""
    try:
        with warnings.catch_warnings():  # one process reading every shard is intended here
            warnings.filterwarnings('ignore', message='torch.distributed is disabled')
            dcp.load(state, storage_reader=SafeReader(path), planner=SafeLoadPlanner(), no_dist=no_dist)
    except dcp.CheckpointException as e:  # DCP gathers every process's exception into one multi-line report
        error = next(iter(e.failures.values()))[0]
        raise ValueError(f"cannot read sharded checkpoint {path}: {first_line(error)}") from None


def load_sharded(path, model, optimizer):
    """Load a sharded checkpoint into `model` and `optimizer` (sharded or not, any number of
    processes: DCP reads the slices each process needs). Returns the checkpoint's other keys."""
    saved = read_metadata(path).state_dict_metadata
    state = {'model': get_model_state_dict(model)}
    if any(k.startswith('optimizer.') for k in saved):
        state['optimizer'] = get_optimizer_state_dict(model, optimizer)
    read_shards(state, path, no_dist=not dist.is_initialized())
    set_model_state_dict(model, state['model'])
    if 'optimizer' in state:
        set_optimizer_state_dict(model, optimizer, state['optimizer'])
    return read_extra(path)


def read_extra(path):
    """The checkpoint's keys other than model and optimizer. The metadata is read (safely) too, so that a
    run resuming from a crafted checkpoint stops before it starts."""
    read_metadata(path)
    extra = safe_torch_load(Path(path) / EXTRA, label='sharded checkpoint part', kind='a nanogrow checkpoint part')
    if not isinstance(extra, dict):
        raise ValueError(f"{Path(path) / EXTRA} is not a nanogrow checkpoint part (a dict), got {type(extra).__name__}")
    return extra


def consolidate(path):
    """The whole model in one process: {'model': full state dict, **extra}; the optimizer state stays in
    the directory (resuming reads it there). Holds every weight in memory; run it on one process."""
    extra = read_extra(path)
    saved = read_metadata(path).state_dict_metadata
    model = {}  # the state to fill, as the metadata describes it
    for k, md in saved.items():
        if not k.startswith('model.'):
            continue
        if not isinstance(md, TensorStorageMetadata):
            raise ValueError(f"cannot read sharded checkpoint {path}: its model entry {k} is not a tensor")
        try:
            model[k[len('model.'):]] = torch.empty(md.size, dtype=md.properties.dtype)
        except (TypeError, RuntimeError, AttributeError) as e:
            raise ValueError(f"cannot read sharded checkpoint {path}: model entry {k}: {first_line(e)}") from None
    state = {'model': model}
    read_shards(state, path, no_dist=True)
    return check_checkpoint({**extra, **state}, path)


def full_state_dict(model):
    """The full, unsharded model state dict on rank 0 (CPU tensors); {} on the other ranks. Collective."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model, state_dict):
    """Load rank 0's full state dict into a sharded model (the other ranks pass {}). Collective."""
    set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


if __name__ == '__main__':
    import sys
    if len(sys.argv) != 3:
        sys.exit("usage: python parallel.py SHARDED_CHECKPOINT_DIR OUT.pt")
    try:
        check_out_path(sys.argv[2], [sys.argv[1]])  # before any work: never over a file of the checkpoint
        save_checkpoint(consolidate(sys.argv[1]), sys.argv[2])
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {sys.argv[2]}")
