"""
The checkpoint contract: the one module that knows what a nanogrow checkpoint holds, how it is
written and how any model spec a script accepts turns into one.

A checkpoint is a plain dict of tensors and Python builtins, so `torch.load(weights_only=True)`
reads it without executing code, written atomically (a crash mid-save never leaves a half file):

    model          state_dict (no torch.compile / DDP prefixes)
    model_args     GPTConfig.to_dict()
    param_counts   GPT.param_counts() of that config (unique / logical / non-embedding)
    tokenizer      the training data's meta.json (how to encode and decode), or None
    tokens_seen, flops_spent, elapsed   what the model cost so far, its sources' cost included
    provenance     how grow.py made it: sources, method, options, origin of every logical layer, new blocks
    iter_num, config   the run (or tool) that wrote it
  and, in train.py's last.pt / best.pt only, the state a run resumes from (RESUME_FIELDS):
    optimizer, scaler, best_val_loss, rng (torch's CPU generator), growths (iterations at which the run grew)

Runs under FSDP (train.py fsdp=True) write the same dict as a sharded directory instead (last.dcp,
best.dcp: parallel.py), every process its shards; it reads back on any number of processes.

Model specs every script accepts (load_any): a .pt file | a sharded .dcp directory | a run's out_dir
(best, else last) | a Hugging Face model directory or 'hf:<dir>' | 'llama2c:<model.bin>[,<tokenizer.bin>]'.
Foreign and sharded formats are convert.py's and parallel.py's, imported lazily so plain checkpoints
need none of their dependencies.
"""
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import torch

from configurator import check_out_path
from model import ADAPTABLE_KEYS, GPT, GPTConfig

CONTENT_FIELDS = dict(tokenizer=None, provenance=None, tokens_seen=0, flops_spent=0.0, elapsed=0.0,
                      iter_num=0, config=None)
RESUME_FIELDS = ('optimizer', 'scaler', 'best_val_loss', 'rng', 'growths')


def make_checkpoint(state_dict, model_args, **fields):
    """The one constructor of a checkpoint dict (train.py, grow.py, convert.py); `fields` are
    CONTENT_FIELDS (defaults above) and, for a run's own checkpoints, RESUME_FIELDS."""
    unknown = sorted(set(fields) - set(CONTENT_FIELDS) - set(RESUME_FIELDS))
    if unknown:
        raise TypeError(f"not checkpoint fields: {unknown}")
    config = GPTConfig.from_dict(model_args)
    with torch.device('meta'):  # shapes only: the counts cost no memory and no init
        counts = GPT(config).param_counts()
    return dict(model=strip_prefixes(state_dict), model_args=config.to_dict(), param_counts=counts,
                **(CONTENT_FIELDS | fields))


TEMP_NAME = re.compile(r'\.(.+)\.tmp(\d+)')  # save_checkpoint's temp files: .<name>.tmp<pid>


def remove_stale_temps(directory):
    """Delete save_checkpoint temp files left by processes that no longer run (killed mid-save): each is a
    full-size checkpoint nothing will ever read. Temp files of live processes (a concurrent save) stay."""
    for p in Path(directory).glob('.*.tmp*'):
        m = TEMP_NAME.fullmatch(p.name)
        if m and int(m[2]) != os.getpid() and not pid_alive(int(m[2])):
            p.unlink(missing_ok=True)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def tensor_bytes(obj):
    """Bytes of the distinct tensor storages in a nested checkpoint dict (tied weights count once)."""
    storages = {}
    def walk(o):
        if isinstance(o, torch.Tensor):
            storages[o.untyped_storage().data_ptr()] = o.untyped_storage().nbytes()
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)
    walk(obj)
    return sum(storages.values())


def save_checkpoint(ckpt, path):
    """Write atomically: a temp file beside path, fsync, rename. A failed write (disk full, no permission)
    raises ValueError with one line and leaves the previous file as it was and no temp file behind."""
    path = Path(path)
    check_out_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch's writer reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        need, free = tensor_bytes(ckpt), shutil.disk_usage(path.parent).free
        if getattr(e, 'errno', None) == 28 or free < need:  # ENOSPC
            raise ValueError(f"cannot write {path}: no space left in {path.parent} (needs about {need / 2**20:.1f} MiB, "
                             f"{free / 2**20:.1f} MiB free); the previous {path.name}, if any, is unchanged") from None
        reason = getattr(e, 'strerror', None) or (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise ValueError(f"cannot write {path}: {reason}") from None
    finally:
        tmp.unlink(missing_ok=True)


def safe_torch_load(path, label='checkpoint', kind='a nanogrow checkpoint', map_location='cpu'):
    """torch.load(weights_only=True) of a file from anywhere: a file that is not a PyTorch zip file is never
    unpickled, and one that holds other Python objects is refused, both with one line that says so."""
    if os.path.getsize(path) == 0:
        raise ValueError(f"cannot read {label} {path}: an empty file, not {kind}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"cannot read {label} {path}: not {kind} (not a PyTorch zip file)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only met an object it will not construct
        raise ValueError(f"cannot read {label} {path}: not {kind}; {refusal(e)}") from None
    except Exception as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ValueError(f"cannot read {label} {path}: not {kind} (unreadable: {reason})") from None


def refusal(error):
    """Why torch.load(weights_only=True) refused (its pickle.UnpicklingError), in one line without torch's advice
    to load the file unrestricted."""
    found = re.search(r'GLOBAL (\S+)', str(error))
    what = f" such as {found[1]}" if found else ""
    return f"refused for safety: it holds Python objects{what} beyond tensors and builtins, and loading them could run code"


def load_checkpoint(path, map_location='cpu'):
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = safe_torch_load(path, map_location=map_location)
    if isinstance(ckpt, dict) and 'grown_at' in ckpt:  # written before runs could grow more than once
        grown_at = ckpt.pop('grown_at')
        ckpt['growths'] = [] if grown_at is None else [grown_at]
    return check_checkpoint(ckpt, path)


def check_checkpoint(ckpt, where):
    """The checkpoint validation layer: a dict with a state_dict of tensors and model_args a GPTConfig accepts;
    content fields a checkpoint lacks (written by older code, or nanoGPT) get their defaults. -> ckpt."""
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_args' not in ckpt:
        raise ValueError(f"{where} is not a nanogrow checkpoint (no 'model'/'model_args')")
    model, args = ckpt['model'], ckpt['model_args']
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise ValueError(f"{where}: 'model' must be a state_dict (names -> tensors)")
    if not isinstance(args, dict):
        raise ValueError(f"{where}: 'model_args' must be a dict of GPTConfig keys, got {type(args).__name__}")
    try:
        GPTConfig.from_dict(args)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: model_args: {e}") from None
    for k in ('tokenizer', 'provenance'):  # the tokenizer's contents are checked where one is built (tokenizer.check_meta)
        if not isinstance(ckpt.get(k), (dict, type(None))):
            raise ValueError(f"{where}: '{k}' must be a dict or None, got {type(ckpt[k]).__name__}")
    for k, v in CONTENT_FIELDS.items():
        ckpt.setdefault(k, v)
    return ckpt


def run_checkpoint(out_dir):
    """A run's own last checkpoint, with the state to resume from (train.py init_from='resume'): last.pt,
    or last.dcp if that is newer. A sharded one comes without model and optimizer (they are read into
    the sharded model) and with 'sharded': its path."""
    path, sharded = os.path.join(out_dir, 'last.pt'), os.path.join(out_dir, 'last.dcp')
    if os.path.isdir(out_dir):
        remove_stale_temps(out_dir)
    if os.path.exists(sharded) and (not os.path.exists(path) or os.path.getmtime(sharded) > os.path.getmtime(path)):
        from parallel import read_extra
        path, ckpt = sharded, dict(read_extra(sharded), sharded=sharded, optimizer=None)
    else:
        ckpt = load_checkpoint(path)
    missing = [k for k in RESUME_FIELDS if k not in ckpt and k != 'growths']
    if missing or not isinstance(ckpt.get('config'), dict):
        raise ValueError(f"{path} holds no training state to resume (written by grow.py or convert.py?): "
                         f"start from its weights with init_from={path}")
    ckpt.setdefault('growths', [])
    return ckpt


def load_any(spec):
    """Any model spec (see the module docstring) -> a checkpoint dict."""
    spec = str(spec)
    if spec.startswith(('hf:', 'llama2c:')):
        from convert import import_model
        return import_model(spec)
    if os.path.isfile(os.path.join(spec, '.metadata')):  # a sharded checkpoint: gathered into one process
        from parallel import consolidate
        return consolidate(spec)
    if os.path.isdir(spec):
        for name in ('best.pt', 'last.pt', 'best.dcp', 'last.dcp'):
            if os.path.exists(os.path.join(spec, name)):
                return load_any(os.path.join(spec, name))
        if os.path.isfile(os.path.join(spec, 'config.json')) and not os.path.isfile(os.path.join(spec, 'log.jsonl')):
            from convert import import_model
            return import_model('hf:' + spec)
        raise FileNotFoundError(f"{spec}: neither a run directory (best.pt / last.pt) nor a Hugging Face model directory")
    return load_checkpoint(spec)


def strip_prefixes(state_dict):
    # torch.compile and DDP wrap the module; their prefixes must not leak into saved weights
    out = {}
    for k, v in state_dict.items():
        while k.startswith(('_orig_mod.', 'module.')):
            k = k.split('.', 1)[1]
        out[k] = v
    return out


def build_model(ckpt, **overrides):
    """The GPT a checkpoint describes, on the CPU. `overrides` may change ADAPTABLE_KEYS; adapters they
    add start as the identity (LoRA B = 0, IA3 = 1), so the model computes what the checkpoint did.
    Built on the meta device and given the checkpoint's tensors (assign=True): no init that is then
    overwritten, no second copy of the weights. Weights are float32 (the master copy autocast reads)."""
    bad = sorted(set(overrides) - set(ADAPTABLE_KEYS))
    if bad:
        raise ValueError(f"cannot change {bad} of a trained model; only {list(ADAPTABLE_KEYS)}")
    config = GPTConfig.from_dict({**ckpt['model_args'], **overrides})
    with torch.device('meta'):
        model = GPT(config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in strip_prefixes(ckpt['model']).items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as e:  # shape mismatch; torch's message is a multi-line list
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        raise ValueError(f"checkpoint weights do not match its model_args: {lines[-1][:300]}") from None
    missing = [k for k in missing if not (overrides and k.startswith('adapters.'))]
    if missing or unexpected:
        raise ValueError(f"checkpoint weights do not match its model_args: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.finish_meta_build()
