"""
A prepared split as one 1-D array of token ids, whichever way it is stored: a single {split}.bin
(the small datasets) or the fixed-size shards of a large corpus ({split}_000000.bin, ... listed in
meta.json by data/web/prepare.py). Slices may cross shard boundaries.
"""
import operator
import os

import numpy as np

from tokenizer import load_meta


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


def open_tokens(data_dir, split):
    """The tokens of `split` in a prepared data dir: an np.memmap of {split}.bin, or a ShardedTokens
    over the split's shards. Raises FileNotFoundError / ValueError for missing or truncated files."""
    meta = load_meta(data_dir)
    single = os.path.join(data_dir, f'{split}.bin')
    if os.path.isfile(single):
        return np.memmap(single, dtype=meta['dtype'], mode='r')
    shards = (meta.get('shards') or {}).get(split)
    if not shards:
        raise FileNotFoundError(f"no {split}.bin and no {split} shards listed in {data_dir}/meta.json")
    paths = [os.path.join(data_dir, s['file']) for s in shards]
    itemsize = np.dtype(meta['dtype']).itemsize
    for path, s in zip(paths, shards):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"shard {path} listed in meta.json is missing")
        if os.path.getsize(path) != s['tokens'] * itemsize:
            raise ValueError(f"shard {path} has {os.path.getsize(path) // itemsize} tokens, meta.json says {s['tokens']}")
    return ShardedTokens(paths, [s['tokens'] for s in shards], meta['dtype'])
