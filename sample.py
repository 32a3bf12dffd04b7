"""
Sample from a trained model:
$ python sample.py --out_dir=out-shakespeare-char
$ python sample.py --init_from=out/best.pt --start="Once upon a time" --num_samples=3 --temperature=0
$ python sample.py --init_from=llama2c:../shared/models/stories260K/stories260K.bin,../shared/models/stories260K/tok512.bin
The prompt is encoded with the tokenizer recorded in the checkpoint (the training data's meta.json).
"""
import math
import sys

import torch

from checkpoint import build_model, load_any
from configurator import configure
from device import choose
from tokenizer import check_meta, get_tokenizer

# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume' (out_dir: best.pt, else last.pt) | path/to/ckpt.pt | out_dir | 'hf:<dir>' | 'llama2c:<file>[,<tok>]'
out_dir = 'out'  # used with init_from='resume'
start = "\n"  # the prompt; or "FILE:prompt.txt" to read it from a file
num_samples = 10  # number of samples to draw
max_new_tokens = 500  # number of tokens generated in each sample
temperature = 0.8  # 1.0 = no change, < 1.0 = less random, > 1.0 = more random, 0 = greedy
top_k = 200  # retain only the top_k most likely tokens, clamp others to have 0 probability (None = all)
seed = 1337
device = 'auto'  # 'auto' (cuda > mps > cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype = 'auto'  # 'auto' (device.py's policy) | 'float32' | 'bfloat16' | 'float16'
# -----------------------------------------------------------------------------
defaults = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str, type(None)))}
globals().update(configure(defaults, types={'top_k': (int, type(None))}))
torch.manual_seed(seed)

try:
    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError(f"num_samples and max_new_tokens must be >= 1, got {num_samples} and {max_new_tokens}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, or None for all tokens, got {top_k}")
    ckpt = load_any(out_dir if init_from == 'resume' else init_from)
    policy = choose(device, dtype, width=ckpt['model_args']['n_embd'], sampling=True)
    model = build_model(ckpt)
    if not ckpt.get('tokenizer'):
        raise ValueError("the checkpoint records no tokenizer (its training data had no meta.json)")
    check_meta(ckpt['tokenizer'], f"{out_dir if init_from == 'resume' else init_from}: tokenizer")
    tok = get_tokenizer(ckpt['tokenizer'])
    if start.startswith('FILE:'):
        try:
            with open(start[5:], encoding='utf-8') as f:
                start = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--start={start}: cannot read the prompt file ({getattr(e, 'strerror', None) or e})") from None
    ids = tok.encode(start)
    first = tok.bos if tok.bos is not None else tok.eot if not ids else None  # llama2.c models expect BOS first
    ids = ([first] if first is not None else []) + ids
    if not ids:
        raise ValueError("empty prompt and the tokenizer has no BOS/EOT token to start from: pass --start")
except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
model.eval()
model.to(policy.device)
x = torch.tensor(ids, dtype=torch.long, device=policy.device)[None, ...]

with torch.no_grad():
    with policy.autocast():
        for k in range(num_samples):
            y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k)
            print(tok.decode(y[0, 1 if first is not None else 0:].tolist()))  # without the start token
            print('---------------')
