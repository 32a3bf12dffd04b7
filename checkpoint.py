"""
Checkpoints: plain dicts of tensors and Python builtins, so `torch.load(weights_only=True)` reads
them without executing code. Written atomically (a crash mid-save never leaves a half file).

    model: state_dict   model_args: GPTConfig.to_dict()   optimizer   iter_num   best_val_loss
    config   rng   data_state   param_counts   tokenizer (dataset meta.json)   tokens_seen
    flops_spent   elapsed   provenance (grown checkpoints)
"""
import os
from pathlib import Path

import torch

from model import GPT, GPTConfig

# keys that may differ from a checkpoint's model_args when building from it: they add adapters or
# virtual layers, or change regularisation, but not the shape of any stored weight
ADAPTABLE = ('dropout', 'layer_map', 'lora_rank', 'lora_alpha', 'lora_dropout', 'lora_targets',
             'ia3', 'adapter_layers', 'attn_window')


def save_checkpoint(obj, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
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
    return ckpt


def strip_prefixes(state_dict):
    # torch.compile and DDP wrap the module; their prefixes must not leak into saved weights
    out = {}
    for k, v in state_dict.items():
        while k.startswith(('_orig_mod.', 'module.')):
            k = k.split('.', 1)[1]
        out[k] = v
    return out


def build_model(ckpt, **overrides):
    """The GPT a checkpoint describes. `overrides` may change ADAPTABLE keys; adapters they add
    start as the identity (LoRA B = 0, IA3 = 1), so the model computes what the checkpoint did."""
    bad = sorted(set(overrides) - set(ADAPTABLE))
    if bad:
        raise ValueError(f"cannot change {bad} of a trained model; only {list(ADAPTABLE)}")
    model = GPT(GPTConfig.from_dict({**ckpt['model_args'], **overrides}))
    try:
        missing, unexpected = model.load_state_dict(strip_prefixes(ckpt['model']), strict=False)
    except RuntimeError as e:  # shape mismatch; torch's message is a multi-line list
        lines = [l.strip() for l in str(e).splitlines() if l.strip()]
        raise ValueError(f"checkpoint weights do not match its model_args: {lines[-1][:300]}") from None
    missing = [k for k in missing if not (overrides and k.startswith('adapters.'))]
    if missing or unexpected:
        raise ValueError(f"checkpoint weights do not match its model_args: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model
