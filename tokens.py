"""
Token data on disk, read by train.py, eval.py and grow.py: a prepared data dir (data/<name>/prepare.py)
holds train.bin and val.bin, flat token ids (uint16, or uint32 for vocabularies over 65,536), and
meta.json, which says how they were tokenized (tokenizer.py reads it).

Batches are drawn by key: every batch comes from its own generator seeded by a key such as
(seed, split, iteration, micro-step), so a resumed run, or one on more or fewer processes, sees
exactly the batches an uninterrupted single-process run would.
"""
import hashlib
import os

import numpy as np
import torch

from tokenizer import load_meta


def rng_seed(*key):
    """A 64-bit seed for one use of randomness, a hash of its key."""
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), 'little')


class TokenData:
    """The train/val token streams of a data dir; meta is None when the dir has no meta.json."""

    def __init__(self, data_dir):
        self.dir = data_dir
        for split in ('train', 'val'):
            if not os.path.isfile(self.path(split)):
                raise FileNotFoundError(f"{self.path(split)} not found (run data/<name>/prepare.py, or set data_dir)")
        self.meta = load_meta(data_dir) if os.path.isfile(os.path.join(data_dir, 'meta.json')) else None
        self.dtype = np.dtype((self.meta or {}).get('dtype', 'uint16'))

    def path(self, split):
        return os.path.join(self.dir, f'{split}.bin')

    def tokens(self, split):
        # a new memmap per call: a long-lived one grows the process's memory as pages are touched
        # (https://stackoverflow.com/questions/45132940/numpy-memmap-memory-usage-want-to-iterate-once/61472122#61472122)
        return np.memmap(self.path(split), dtype=self.dtype, mode='r')

    def batch(self, split, block_size, batch_size, key):
        """batch_size random windows of split: inputs X and next-token targets Y, int64 on the CPU."""
        data = self.tokens(split)
        ix = torch.randint(len(data) - block_size, (batch_size,), generator=torch.Generator().manual_seed(rng_seed(*key)))
        x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
        return x, y

    def stream(self, split, block_size, batch_size, key):
        """An endless iterator of batches keyed (*key, 0), (*key, 1), ... (growth operators that learn)."""
        step = 0
        while True:
            yield self.batch(split, block_size, batch_size, (*key, step))
            step += 1
