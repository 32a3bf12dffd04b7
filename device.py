"""
The device and dtype policy of every script (train.py, sample.py, eval.py), in one function.
"""
from contextlib import nullcontext
from typing import NamedTuple

import torch

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


class Policy(NamedTuple):
    device: str        # 'cpu', 'cuda:0', 'mps'
    device_type: str   # 'cpu', 'cuda', 'mps'
    dtype: str         # autocast dtype name; 'float32' = no autocast
    ptdtype: torch.dtype
    reason: str        # why this dtype, for the log

    def autocast(self):
        if self.dtype == 'float32':
            return nullcontext()
        return torch.amp.autocast(device_type=self.device_type, dtype=self.ptdtype)


def choose(device='auto', dtype='auto', width=None):
    """device 'auto' = cuda > mps > cpu; dtype 'auto' = bfloat16 autocast on CUDA GPUs that support it,
    else float32. Weights stay float32 either way (autocast computes in the lower precision)."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    device_type = device.split(':')[0]
    if device_type not in ('cpu', 'cuda', 'mps'):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    reason = 'as asked'
    if dtype == 'auto':
        bf16 = device_type == 'cuda' and torch.cuda.is_bf16_supported()
        dtype, reason = ('bfloat16', 'the GPU supports it') if bf16 else ('float32', 'the default off CUDA')
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto', {', '.join(map(repr, DTYPES))}, got {dtype!r}")
    return Policy(device, device_type, dtype, DTYPES[dtype], reason)
