"""
The device and dtype policy of every script, in one function:

    policy = choose(device='auto', dtype='auto', width=config.n_embd)  # sampling=True in sample.py
    model.to(policy.device)
    with policy.autocast():
        logits, loss = model(x, y)
    print(f"device {policy.device}, dtype {policy.dtype} ({policy.reason})")

'auto' device: cuda > mps > cpu. 'auto' dtype: bfloat16 autocast on cuda when the GPU supports it;
float32 on mps; on a CPU, bfloat16 autocast only where the CPU computes bf16 natively (AVX512-BF16,
AMX-BF16, Arm BF16) AND a short probe at the model's width (a transformer block's matmuls, forward
and backward) runs faster in it than in float32. Without native bf16 the CPU emulates it, often 100x
slower, so the probe is not even run. The probe takes under a second, once per CPU, torch version
and width bucket; its result is cached in $XDG_CACHE_HOME/nanogrow/cpu_bf16.json (~/.cache/nanogrow/).
Sampling on a CPU stays float32 (see choose). Weights stay float32 either way: autocast only lowers
the matmul inputs, so the optimizer keeps float32 master weights.

NANOGROW_CPU_BF16 overrides the CPU's auto choice: 'auto' (default, as above), 'probe' (measure again
and update the cache), 'on' (bf16 wherever it is native, no probe), 'off' (always float32).
An explicit dtype is used as given on any device.
"""
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch.nn import functional as F

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
CPU_BF16_MODES = ('auto', 'probe', 'on', 'off')
MIN_SPEEDUP = 1.05  # bf16 must beat float32 by this much in the probe: a near tie is not worth the rounding


class Policy(NamedTuple):
    device: str         # 'cpu', 'cuda', 'cuda:1', 'mps'
    device_type: str    # 'cpu', 'cuda', 'mps'
    dtype: str          # 'float32', 'bfloat16', 'float16'
    ptdtype: torch.dtype
    reason: str         # why this dtype, for the log

    def autocast(self):
        """A fresh context manager for one forward pass: autocast to dtype, or nothing for float32."""
        return nullcontext() if self.dtype == 'float32' else torch.autocast(self.device_type, dtype=self.ptdtype)


def choose(device='auto', dtype='auto', width=None, sampling=False):
    """-> Policy for running a model of hidden size `width` (its n_embd; None = unknown, probed as
    512) on `device` in `dtype`. sampling=True: the work is token-by-token generation, where on a CPU
    autocast re-casts every weight for each token and costs more than the float32 matrix-vector
    products it feeds (bf16 sampled at 0.55x float32's speed at width 128, 0.92x at 384), so auto
    stays float32 there. Raises ValueError for an unknown or unavailable device or dtype."""
    if not isinstance(device, str) or not re.fullmatch(r'auto|cpu|mps|cuda(:\d+)?', device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    if dtype != 'auto' and dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto', 'float32', 'bfloat16' or 'float16', got {dtype!r}")
    if width is not None and (not isinstance(width, int) or isinstance(width, bool) or width < 1):
        raise ValueError(f"width must be a positive int or None, got {width!r}")
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    device_type = device.split(':')[0]
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but this torch has no usable CUDA GPU")
    if device_type == 'mps' and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' requested but MPS is not available here")
    if dtype != 'auto':
        reason = f"dtype {dtype} as requested"
    elif device_type == 'cuda':
        dtype, reason = ('bfloat16', "the GPU supports bf16") if torch.cuda.is_bf16_supported() else \
                        ('float32', "the GPU has no bf16 support")
    elif device_type == 'mps':
        dtype, reason = 'float32', "float32 on mps"
    elif sampling:
        dtype, reason = 'float32', "sampling on a CPU: bf16 autocast re-casts the weights for every token"
    else:
        dtype, reason = cpu_dtype(width)
    return Policy(device, device_type, dtype, DTYPES[dtype], reason)

# -----------------------------------------------------------------------------
# the CPU's choice: capability, then a cached probe


def cpu_dtype(width):
    """-> (dtype, reason) for autocast on this CPU at hidden size width."""
    mode = os.environ.get('NANOGROW_CPU_BF16', 'auto')
    if mode not in CPU_BF16_MODES:
        raise ValueError(f"NANOGROW_CPU_BF16 must be one of {', '.join(CPU_BF16_MODES)}, got {mode!r}")
    if mode == 'off':
        return 'float32', "NANOGROW_CPU_BF16=off"
    native = cpu_native_bf16()
    if not native:
        return 'float32', "this CPU has no native bf16 (it would be emulated, much slower)"
    if mode == 'on':
        return 'bfloat16', f"native bf16 ({native}), NANOGROW_CPU_BF16=on"
    bucket = width_bucket(width)
    path, key = cache_path(), machine_key(native)
    cache = read_cache(path)
    entry = cache.get(key, {}).get(str(bucket))
    if entry is None or mode == 'probe':
        fp32_s, bf16_s = probe_bf16(bucket)
        entry = dict(speedup=round(fp32_s / bf16_s, 3), fp32_ms=round(fp32_s * 1e3, 3),
                     bf16_ms=round(bf16_s * 1e3, 3), date=time.strftime('%Y-%m-%d'))
        cache.setdefault(key, {})[str(bucket)] = entry
        write_cache(path, cache)
        how = "measured now"
    else:
        how = f"cached probe of {entry.get('date', '?')}"
    speedup = float(entry['speedup'])
    verdict = f"native bf16 ({native}); probe at width {bucket}: bf16 {speedup:.2f}x float32 ({how}, {path})"
    return ('bfloat16' if speedup >= MIN_SPEEDUP else 'float32'), verdict


def cpu_native_bf16():
    """The CPU's native bf16 instruction sets, e.g. 'avx512_bf16 amx_bf16' ('' = none: emulated)."""
    flags = set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith(('flags', 'Features')):  # x86 | Arm
                    flags.update(line.split(':', 1)[1].split())
                    break
    except OSError:
        pass
    found = [f for f in ('avx512_bf16', 'amx_bf16', 'bf16') if f in flags]  # plain 'bf16' is Arm's FEAT_BF16
    if not found and sys.platform == 'darwin':
        try:
            out = subprocess.run(['sysctl', '-n', 'hw.optional.arm.FEAT_BF16'], capture_output=True, text=True, timeout=5)
            if out.stdout.strip() == '1':
                found = ['FEAT_BF16']
        except (OSError, subprocess.SubprocessError):
            pass
    if not found and not flags:  # no /proc/cpuinfo (Windows): torch's own x86 feature check
        if getattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)():
            found = ['avx512_bf16']
    return ' '.join(found)


def width_bucket(width):
    """Probe widths are powers of two from 64 to 512: from 512 on, matmuls dominate in either dtype."""
    return min(512, max(64, 2 ** math.ceil(math.log2(width or 512))))


def machine_key(native):
    """What the probe's answer depends on: the CPU and torch's kernels."""
    name = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            name = next((l.split(':', 1)[1].strip() for l in f if l.startswith('model name')), name)
    except OSError:
        pass
    return f"{name} | {torch.backends.cpu.get_cpu_capability()} {native} | torch {torch.__version__}"


def probe_bf16(width, tokens=256, min_rounds=3, max_rounds=20, budget=0.5):
    """-> (float32 seconds, bf16-autocast seconds): the best forward+backward pass of one transformer
    block's matmuls (qkv, attention output, MLP) at this width, float32 weights as in training, over
    at least min_rounds and up to `budget` seconds. The dtypes take turns and the best pass counts, so
    load spikes on a busy machine drop out. It runs on one thread: the bf16 gain is the core's, and
    threads spin-waiting for a core another process holds make timings meaningless (a 2-thread probe
    on a busy machine read 0.8x where one thread read 1.8x)."""
    g = torch.Generator().manual_seed(0)
    weights = [(0.02 * torch.randn(o, i, generator=g)).requires_grad_()
               for o, i in ((3 * width, width), (width, width), (4 * width, width), (width, 4 * width))]
    x = torch.randn(tokens, width, generator=g)

    def step(ctx):
        t0 = time.perf_counter()
        with ctx:
            h = F.layer_norm(x, (width,))
            h = h + F.linear(F.linear(h, weights[0])[:, :width], weights[1])
            y = F.linear(F.gelu(F.linear(h, weights[2])), weights[3])
        y.float().square().mean().backward()
        return time.perf_counter() - t0

    ctxs = {'float32': nullcontext, 'bfloat16': lambda: torch.autocast('cpu', dtype=torch.bfloat16)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for ctx in ctxs.values():  # warm-up: allocations, oneDNN kernel selection
            step(ctx())
        best, t0 = {k: math.inf for k in ctxs}, time.perf_counter()
        for r in range(max_rounds):
            if r >= min_rounds and time.perf_counter() - t0 > budget:
                break
            for k, ctx in ctxs.items():
                best[k] = min(best[k], step(ctx()))
    finally:
        torch.set_num_threads(threads)
    return best['float32'], best['bfloat16']


def cache_path():
    root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return os.path.join(root, 'nanogrow', 'cpu_bf16.json')


def read_cache(path):
    """The probe cache; an unreadable or malformed file counts as empty (it is only a cache)."""
    try:
        with open(path) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(cache, dict):
        return {}
    return {k: v for k, v in cache.items() if isinstance(v, dict)
            and all(isinstance(e, dict) and isinstance(e.get('speedup'), (int, float)) for e in v.values())}


def write_cache(path, cache):
    """Write atomically (no half-written file if interrupted); a read-only home just means no cache."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, 'w') as f:
            json.dump(cache, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass
