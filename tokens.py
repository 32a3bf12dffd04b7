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


def check_same_tokenizer(where, meta, theirs):
    """Data described by `meta` (read from `where`) must be encoded as a checkpoint's model expects (its tokenizer
    meta `theirs`): the same tokenizer and the same vocabulary, or every id means another token."""
    if meta['tokenizer'] != theirs.get('tokenizer'):
        raise ValueError(f"{where} uses the {meta['tokenizer']!r} tokenizer, the checkpoint {theirs.get('tokenizer')!r}")
    if meta.get('chars') != theirs.get('chars') or meta['vocab_size'] != theirs.get('vocab_size'):
        only = sorted(set(meta.get('chars') or ()) - set(theirs.get('chars') or ()))
        raise ValueError(f"{where} and the checkpoint both use the {meta['tokenizer']!r} tokenizer but with different "
                         f"vocabularies (data {meta['vocab_size']} tokens, checkpoint {theirs.get('vocab_size')}"
                         + (f"; only in the data: {''.join(only[:20])!r}" if only else "") + "): ids would mean other tokens")


def rng_seed(*key):
    """A 64-bit seed for one use of randomness, a hash of its key."""
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), 'little')


class TokenData:
    """The train/val token streams of a data dir; meta is None when the dir has no meta.json."""

    def __init__(self, data_dir):
        """Validates the dir at once: meta.json (tokenizer.load_meta), non-empty .bin files of whole tokens, and
        ids within meta's vocab_size; every problem is a ValueError / FileNotFoundError naming the file."""
        self.dir = data_dir
        for split in ('train', 'val'):
            if not os.path.isfile(self.path(split)):
                raise FileNotFoundError(f"{self.path(split)} not found (run data/<name>/prepare.py, or set data_dir)")
        self.meta = load_meta(data_dir) if os.path.isfile(os.path.join(data_dir, 'meta.json')) else None
        self.dtype = np.dtype((self.meta or {}).get('dtype', 'uint16'))
        for split in ('train', 'val'):
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
