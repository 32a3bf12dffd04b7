"""data/web/prepare.py and tokens.py: a web corpus in local parquet files becomes fixed-size token shards
that hold every document exactly once, in order; a stopped or crashed preparation resumes after its last
finished shard without rewriting it; the reader slices across shard boundaries."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tokens import ShardedTokens, TokenData
from tokenizer import get_tokenizer

PREPARE = 'data/web/prepare.py'
OPTIONS = ['--shard_tokens', '500', '--val_docs', '20', '--num_proc', '2']


def corpus(tmp_path):
    """Three parquet files: short and long documents (one spans several shards), an empty one, non-ASCII
    text and a literal '<|endoftext|>' that must stay text."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(0)
    words = 'the cat sat on a mat and then went home to sleep under the blue sky'.split()
    files, docs = [], []
    for f in range(3):
        texts = [' '.join(rng.choice(words, size=rng.integers(1, 60))) for _ in range(40)]
        texts[3] = '   '
        texts[7] = 'naïve café — 東京 <|endoftext|> still text'
        if f == 1:
            texts[10] = ' '.join(rng.choice(words, size=1500))
        path = tmp_path / f'part{f}.parquet'
        pq.write_table(pa.table({'text': texts, 'url': ['x'] * len(texts)}), path)
        files.append(str(path))
        docs += [t.strip() for t in texts if t.strip()]
    return files, docs


def prepare(repo, files, out_dir, *extra):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TIKTOKEN_CACHE_DIR': str(repo.parent / 'shared/tokenizers/tiktoken_cache')}
    return subprocess.run([sys.executable, PREPARE, '--input', *files, '--out_dir', str(out_dir), *OPTIONS, *extra],
                          cwd=repo, capture_output=True, text=True, env=env)


def shard_files(out_dir):
    return sorted(f for f in os.listdir(out_dir) if f.endswith('.bin'))


def test_every_document_once_and_resume_after_a_stop_and_a_crash(repo, shared, tmp_path):
    files, docs = corpus(tmp_path)
    full = tmp_path / 'full'
    p = prepare(repo, files, full)
    assert p.returncode == 0, p.stderr
    meta = json.loads((full / 'meta.json').read_text())
    tok = get_tokenizer(meta)
    ids = np.concatenate([TokenData(full).tokens('val')[:], TokenData(full).tokens('train')[:]]).tolist()
    assert ids[-1] == tok.eot
    cuts = [-1] + [i for i, t in enumerate(ids) if t == tok.eot]
    assert [tok.decode(ids[a + 1:b]) for a, b in zip(cuts, cuts[1:])] == docs
    for split in ('train', 'val'):
        sizes = [s['tokens'] for s in meta['shards'][split]]
        assert sum(sizes) == meta[f'{split}_tokens'] and all(n == 500 for n in sizes[:-1]) and 0 < sizes[-1] <= 500
    assert len(meta['shards']['train']) > 5
    assert TokenData(full).tokens('val')[:].tolist().count(tok.eot) == 20 - 1  # the first 20 documents, one of them empty
    assert shard_files(full) == sorted(s['file'] for split in ('train', 'val') for s in meta['shards'][split])

    # the same corpus in two runs: --max_shards stops the first, then a crash during the next shard is
    # simulated by what it leaves behind: a half-written temp file, or a renamed shard the state file
    # does not list yet
    out = tmp_path / 'out'
    p = prepare(repo, files, out, '--max_shards', '4')
    assert p.returncode == 0 and 'run the same command again' in p.stdout, p.stderr
    assert not (out / 'meta.json').exists()
    first = {f: os.stat(out / f).st_mtime_ns for f in shard_files(out)}
    assert len(first) == 4
    state = json.loads((out / 'prepare_state.json').read_text())
    assert state['offset'] > 0  # the first run stopped inside a document: the resume continues it
    nxt = f"train_{len(state['shards']['train']):06d}.bin"
    (out / (nxt + '.tmp')).write_bytes(b'\x00' * 7)
    (out / nxt).write_bytes(b'\x01' * 100)
    p = prepare(repo, files, out)
    assert p.returncode == 0, p.stderr
    assert shard_files(out) == shard_files(full)
    for f in shard_files(full):
        assert (out / f).read_bytes() == (full / f).read_bytes(), f
    assert {f: os.stat(out / f).st_mtime_ns for f in first} == first  # finished shards were not written again
    assert json.loads((out / 'meta.json').read_text())['shards'] == meta['shards']
    assert not [f for f in os.listdir(out) if f.endswith('.tmp')]
    p = prepare(repo, files, out, '--shard_tokens', '600')  # other settings: refused, nothing changed
    assert p.returncode != 0 and p.stderr.startswith('error:') and 'shard_tokens' in p.stderr and len(p.stderr.splitlines()) == 1


def test_resume_reads_no_finished_document_again(repo, shared, tmp_path):
    """A local jsonl stream of five files; a crash during a shard of the fourth file leaves the state file of its
    last finished shard (what --max_shards leaves, plus a half-written temp file). The resumed run starts from the
    stream's saved position: the first two files, garbled meanwhile, are never read again (prepare.py once re-read
    every earlier document; datasets reopens at most the file before the current one, to skip to the position), and
    the shards are those of one uninterrupted run."""
    rng = np.random.default_rng(1)
    words = 'a web page about cats dogs and the weather in spring with many short words'.split()
    files = []
    for f in range(5):
        files.append(str(tmp_path / f'part{f}.jsonl'))
        with open(files[-1], 'w') as fh:
            for _ in range(40):
                fh.write(json.dumps({'text': ' '.join(rng.choice(words, size=rng.integers(5, 30)))}) + '\n')
    opts = ['--shard_tokens', '200']
    full = tmp_path / 'full'
    assert prepare(repo, files, full, *opts).returncode == 0
    meta = json.loads((full / 'meta.json').read_text())
    eot = get_tokenizer(meta).eot
    ends, docs = [], 0  # documents finished at the end of each shard, in writing order (val first)
    for split in ('val', 'train'):
        for shard in meta['shards'][split]:
            docs += int((np.fromfile(full / shard['file'], dtype=np.uint16) == eot).sum())
            ends.append(docs)
    k = next(i for i, n in enumerate(ends) if n > 130) + 1  # the first shard ending inside the fourth file
    assert 130 < ends[k - 1] < 160 and k < len(ends)
    out = tmp_path / 'out'
    p = prepare(repo, files, out, *opts, '--max_shards', str(k))
    assert p.returncode == 0 and 'run the same command again' in p.stdout, p.stderr
    state = json.loads((out / 'prepare_state.json').read_text())
    assert state['doc'] > 130 and state['stream'] is not None
    (out / f"train_{len(state['shards']['train']):06d}.bin.tmp").write_bytes(b'\x00' * 7)  # the crash's leftover
    with open(files[0], 'w') as fh:  # other, fewer documents (the stream infers its columns from the first file)
        fh.write('{"text": "not one of the documents"}\n' * 10)
    with open(files[1], 'w') as fh:
        fh.write('not json: any read of it fails\n')
    p = prepare(repo, files, out, *opts)
    assert p.returncode == 0, p.stderr
    assert shard_files(out) == shard_files(full)
    assert all((out / f).read_bytes() == (full / f).read_bytes() for f in shard_files(full))


def test_bad_input_is_one_line_error(repo, shared, tmp_path):
    p = prepare(repo, [str(tmp_path / 'nope.parquet')], tmp_path / 'out')
    assert p.returncode != 0 and p.stderr.startswith('error:') and len(p.stderr.splitlines()) == 1
    (tmp_path / 'a.txt').write_text('hi')
    p = prepare(repo, [str(tmp_path / 'a.txt')], tmp_path / 'out')
    assert p.returncode != 0 and 'unsupported format' in p.stderr
    (tmp_path / 'a.jsonl').write_text('{"body": "no text column"}\n')
    p = prepare(repo, [str(tmp_path / 'a.jsonl')], tmp_path / 'out')
    assert p.returncode != 0 and "no 'text' column" in p.stderr and len(p.stderr.splitlines()) == 1
    assert not (tmp_path / 'out').exists()


META = {'tokenizer': 'gpt2', 'vocab_size': 50257, 'dtype': 'uint16'}


def test_reader_slices_across_shard_boundaries(tmp_path):
    sizes = [5, 1, 7, 3]
    data = np.arange(sum(sizes), dtype=np.uint16)
    shards, start = [], 0
    for k, n in enumerate(sizes):
        data[start:start + n].tofile(tmp_path / f'train_{k:06d}.bin')
        shards.append({'file': f'train_{k:06d}.bin', 'tokens': n})
        start += n
    (tmp_path / 'meta.json').write_text(json.dumps({**META, 'shards': {'train': shards, 'val': shards[:1]}}))
    tokens = TokenData(tmp_path).tokens('train')
    assert isinstance(tokens, ShardedTokens) and len(tokens) == len(data)
    for a in range(len(data) + 1):
        for b in range(a, len(data) + 2):
            assert np.array_equal(tokens[a:b], data[a:b]), (a, b)
    assert tokens[5] == 5 and tokens[-1] == data[-1] and np.array_equal(tokens[-4:], data[-4:])
    with pytest.raises(IndexError):
        tokens[len(data)]
    data[:3].tofile(tmp_path / 'train_000002.bin')  # truncated
    with pytest.raises(ValueError, match='meta.json says 7'):
        TokenData(tmp_path).tokens('train')
    (tmp_path / 'meta.json').write_text(json.dumps({**META, 'shards': {'train': shards}}))
    with pytest.raises(FileNotFoundError, match='val.bin not found'):
        TokenData(tmp_path)
    data.tofile(tmp_path / 'val.bin')  # a single file: the small datasets' layout
    assert np.array_equal(TokenData(tmp_path).tokens('val')[2:9], data[2:9])
