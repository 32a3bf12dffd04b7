"""
Sample from a trained model:
$ python sample.py --out_dir=out-shakespeare-char
$ python sample.py --init_from=out/best.pt --start="Once upon a time" --num_samples=3 --temperature=0
$ python sample.py --init_from=llama2c:../shared/models/stories260K/stories260K.bin,../shared/models/stories260K/tok512.bin
The prompt is encoded with the tokenizer recorded in the checkpoint (the training data's meta.json).
"""
import os
import sys
from contextlib import nullcontext

import torch

from checkpoint import build_model, load_checkpoint
from configurator import configure
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
init_from = 'resume'  # 'resume' (out_dir/best.pt, else last.pt) | path/to/ckpt.pt | 'hf:<dir>' | 'llama2c:<file>[,<tok>]'
out_dir = 'out'  # used with init_from='resume'
start = "\n"  # the prompt; or "FILE:prompt.txt" to read it from a file
num_samples = 10  # number of samples to draw
max_new_tokens = 500  # number of tokens generated in each sample
temperature = 0.8  # 1.0 = no change, < 1.0 = less random, > 1.0 = more random, 0 = greedy
top_k = 200  # retain only the top_k most likely tokens, clamp others to have 0 probability (None = all)
seed = 1337
device = 'auto'  # 'auto' (cuda > mps > cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype = 'auto'  # 'auto' (bfloat16 on cuda if supported, else float32) | 'float32' | 'bfloat16' | 'float16'
# -----------------------------------------------------------------------------
defaults = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str, type(None)))}
globals().update(configure(defaults, types={'top_k': (int, type(None))}))

if device == 'auto':
    device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
device_type = device.split(':')[0]
if dtype == 'auto':
    dtype = 'bfloat16' if device_type == 'cuda' and torch.cuda.is_bf16_supported() else 'float32'
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}.get(dtype)
if ptdtype is None:
    sys.exit(f"error: dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got {dtype!r}")
ctx = nullcontext() if dtype == 'float32' else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
torch.manual_seed(seed)

try:
    if init_from == 'resume':
        best = os.path.join(out_dir, 'best.pt')
        ckpt = load_checkpoint(best if os.path.isfile(best) else os.path.join(out_dir, 'last.pt'))
    elif init_from.startswith(('hf:', 'llama2c:')):
        from convert import import_model  # only imports need convert's dependencies
        ckpt = import_model(init_from)
    else:
        ckpt = load_checkpoint(init_from)
    model = build_model(ckpt)
    if not ckpt.get('tokenizer'):
        raise ValueError("the checkpoint records no tokenizer (its training data had no meta.json)")
    tok = get_tokenizer(ckpt['tokenizer'])
    if start.startswith('FILE:'):
        with open(start[5:], encoding='utf-8') as f:
            start = f.read()
    ids = tok.encode(start)
    first = tok.bos if tok.bos is not None else tok.eot if not ids else None  # llama2.c models expect BOS first
    ids = ([first] if first is not None else []) + ids
    if not ids:
        raise ValueError("empty prompt and the tokenizer has no BOS/EOT token to start from: pass --start")
except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
model.eval()
model.to(device)
x = torch.tensor(ids, dtype=torch.long, device=device)[None, ...]

with torch.no_grad():
    with ctx:
        for k in range(num_samples):
            y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k)
            print(tok.decode(y[0, 1 if first is not None else 0:].tolist()))  # without the start token
            print('---------------')
