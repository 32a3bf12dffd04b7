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

Model specs every script accepts (load_any): a .pt file | a run's out_dir (best.pt, else last.pt) |
a Hugging Face model directory or 'hf:<dir>' | 'llama2c:<model.bin>[,<tokenizer.bin>]'. Foreign
formats are convert.py's, imported lazily so plain checkpoints need none of its dependencies.
"""
import os
from pathlib import Path

import torch

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


def save_checkpoint(ckpt, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path, map_location='cpu'):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot read checkpoint {path}: {msg[:200]}") from None
    if not isinstance(ckpt, dict) or 'model' not in ckpt or 'model_args' not in ckpt:
        raise ValueError(f"{path} is not a nanogrow checkpoint (no 'model'/'model_args')")
    if 'grown_at' in ckpt:  # written before runs could grow more than once
        grown_at = ckpt.pop('grown_at')
        ckpt['growths'] = [] if grown_at is None else [grown_at]
    return ckpt


def run_checkpoint(out_dir, name='last.pt'):
    """A run's own checkpoint with the state to resume from (train.py init_from='resume')."""
    path = os.path.join(out_dir, name)
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
    if os.path.isdir(spec):
        for name in ('best.pt', 'last.pt'):
            if os.path.isfile(os.path.join(spec, name)):
                return load_checkpoint(os.path.join(spec, name))
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
