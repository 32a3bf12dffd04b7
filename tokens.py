"""
Token data on disk, read by train.py, eval.py and grow.py: a prepared data dir (data/<name>/prepare.py)
holds train.bin and val.bin, flat token ids (uint16, or uint32 for vocabularies over 65,536), and
meta.json, which says how they were tokenized (tokenizer.py reads it). A large corpus is stored as
fixed-size shards instead ({split}_000000.bin, ... listed in meta.json by data/web/prepare.py), read
as one array whose slices may cross shard boundaries.

Batches are drawn by key: every batch comes from its own generator seeded by a key such as
(seed, split, iteration, micro-step), so a resumed run, or one on more or fewer processes, sees
exactly the batches an uninterrupted single-process run would.
"""
import hashlib
import operator
import os

import numpy as np
import torch

from tokenizer import load_meta


def rng_seed(*key):
    """A 64-bit seed for one use of randomness, a hash of its key."""
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), 'little')


class TokenData:
    """The token streams of a data dir (`splits` must exist); meta is None when the dir has no meta.json."""

    def __init__(self, data_dir, splits=('train', 'val')):
        """Validates the dir at once: meta.json (tokenizer.load_meta), each of `splits` present as a non-empty
        .bin file of whole tokens (or as shards listed in meta.json), and ids within meta's vocab_size; every
        problem is a ValueError / FileNotFoundError naming the file."""
        self.dir = data_dir
        self.meta = load_meta(data_dir) if os.path.isfile(os.path.join(data_dir, 'meta.json')) else None
        self.dtype = np.dtype((self.meta or {}).get('dtype', 'uint16'))
        self.shards = (self.meta or {}).get('shards') or {}
        for split in splits:
            if self.shards.get(split) and not os.path.isfile(self.path(split)):
                continue  # shards are checked against meta.json's sizes when opened
            if not os.path.isfile(self.path(split)):
                raise FileNotFoundError(f"{self.path(split)} not found (run data/<name>/prepare.py, or set data_dir)")
            size = os.path.getsize(self.path(split))
            if size == 0:
                raise ValueError(f"{self.path(split)} is empty (re-run the dataset's prepare.py)")
            if size % self.dtype.itemsize:
                raise ValueError(f"{self.path(split)} has {size} bytes, not a whole number of {self.dtype} tokens "
                                 f"({self.dtype.itemsize} bytes each): truncated, or meta.json's dtype is wrong")
            if self.meta:
                self.check_ids(split, self.meta['vocab_size'], 'meta.json vocab_size')

    def check_ids(self, split, vocab_size, whose):
        """Raise if split holds a token id >= vocab_size (a data dir tokenized for another vocabulary)."""
        if vocab_size > np.iinfo(self.dtype).max:
            return  # every id the dtype can hold fits
        top = self.max_id(split)
        if top >= vocab_size:
            raise ValueError(f"{self.path(split)} holds token id {top}, outside the {whose} of {vocab_size} "
                             f"(the data was tokenized for another vocabulary)")

    def max_id(self, split):
        """The largest id in split: of the whole file up to 64M tokens, beyond that of 64 evenly spaced 1M-token
        chunks (cheap on a huge file; a file tokenized for another vocabulary has large ids everywhere)."""
        data, chunk = self.tokens(split), 1 << 20
        if len(data) <= 64 * chunk:
            return int(data.max())
        return int(max(data[s:s + chunk].max() for s in np.linspace(0, len(data) - chunk, 64).astype(np.int64)))

    def path(self, split):
        return os.path.join(self.dir, f'{split}.bin')

    def tokens(self, split):
        """The tokens of split: an np.memmap of {split}.bin, or the split's shards as one array. A new
        one per call: a long-lived memmap grows the process's memory as pages are touched
        (https://stackoverflow.com/questions/45132940/numpy-memmap-memory-usage-want-to-iterate-once/61472122#61472122)."""
        if os.path.isfile(self.path(split)):
            return np.memmap(self.path(split), dtype=self.dtype, mode='r')
        if not self.shards.get(split):
            raise FileNotFoundError(f"no {split}.bin and no {split} shards listed in {self.dir}/meta.json")
        paths = [os.path.join(self.dir, s['file']) for s in self.shards[split]]
        for path, s in zip(paths, self.shards[split]):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"shard {path} listed in meta.json is missing")
            if os.path.getsize(path) != s['tokens'] * self.dtype.itemsize:
                raise ValueError(f"shard {path} has {os.path.getsize(path) // self.dtype.itemsize} tokens, meta.json says {s['tokens']}")
        return ShardedTokens(paths, [s['tokens'] for s in self.shards[split]], self.dtype)

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


class ShardedTokens:
    """The concatenation of shard files, read lazily: len(), [i] and [a:b]. Each read maps only the
    shards it touches, and unmaps them after (long-lived memmaps grow the resident set)."""

    def __init__(self, paths, sizes, dtype):
        self.paths, self.dtype = paths, np.dtype(dtype)
        self.starts = np.cumsum([0] + list(sizes))

    def __len__(self):
        return int(self.starts[-1])

    def __getitem__(self, key):
        if not isinstance(key, slice):
            i = operator.index(key)
            i += len(self) if i < 0 else 0
            if not 0 <= i < len(self):
                raise IndexError(f"token {key} out of range for {len(self)} tokens")
            return self[i:i + 1][0]
        start, stop, step = key.indices(len(self))
        if step != 1:
            raise ValueError("ShardedTokens slices take no step")
        parts = []
        shard = int(np.searchsorted(self.starts, start, side='right')) - 1
        while start < stop:
            end = min(stop, int(self.starts[shard + 1]))
            data = np.memmap(self.paths[shard], dtype=self.dtype, mode='r')
            parts.append(np.array(data[start - self.starts[shard]:end - self.starts[shard]]))
            start, shard = end, shard + 1
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)
