"""tokenizer.py: the llama2.c tokenizer against run.c's algorithm, the byte-level BPE trained on the data (deterministic,
exact round trips), and a checkpoint trained on BPE data that samples with the data dir gone."""
import json
import os
import random
import re
import shutil
import subprocess
import sys

import pytest

from tokenizer import BPE_EOT, get_tokenizer, load_meta, train_bpe

ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
TRICKY = ['caf\u00e9 na\u00efve \u00c5ngstr\u00f6m', 'e\u0301 (combining accent) vs \u00e9', 'emoji \U0001F600\U0001F469\u200d\U0001F469\u200d\U0001F467 \u2764\ufe0f',
          '\u4e2d\u6587 \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0627\u0644\u0639\u0631\u0628\u064a\u0629', 'tabs\tand\r\nCRLF  double  spaces \n\n\n',
          ' leading space', '\x00\x7f control bytes', '']


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


def train_stories(shared):
    text = (shared / 'data/tinystories/train.txt').read_text(encoding='utf-8')
    return [d.strip() for d in re.split(r'\n\s*\n', text) if d.strip()]


def test_bpe_training_is_deterministic(repo, shared):
    stories = train_stories(shared)
    bpe_json = train_bpe(stories, 1024)
    assert train_bpe(stories, 1024) == bpe_json  # in one process
    # and in another one (the trainer's hash maps are seeded per process)
    code = ("import sys, json; from tokenizer import train_bpe; "
            "sys.stdout.write(train_bpe(json.load(sys.stdin), 1024))")
    p = subprocess.run([sys.executable, '-c', code], input=json.dumps(stories), capture_output=True, text=True,
                       cwd=repo, env=ENV, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == bpe_json
    tok = get_tokenizer({'tokenizer': 'bpe', 'tokenizer_json': bpe_json})
    assert (tok.vocab_size, tok.eot, tok.bos) == (1024, 0, None)
    assert train_bpe(stories[::2], 1024) != bpe_json  # the file does depend on the text


def test_bpe_round_trips_exactly(shared):
    tok = get_tokenizer({'tokenizer': 'bpe', 'tokenizer_json': train_bpe(train_stories(shared), 1024)})
    text = (shared / 'data/tinystories/valid.txt').read_text(encoding='utf-8')  # text the tokenizer never saw
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode('utf-8')) / 2.5  # merges are used: ~3 bytes per token here
    for s in TRICKY:
        assert tok.decode(tok.encode(s)) == s, s
    assert tok.encode('\U0001F600') and max(tok.encode('\U0001F600')) < tok.vocab_size
    random.seed(0)
    for _ in range(100):  # slices cut anywhere, mixed with the tricky strings
        a = random.randrange(len(text))
        s = text[a:a + random.randrange(300)] + random.choice(TRICKY)
        assert tok.decode(tok.encode(s)) == s, s
    # a literal '<|endoftext|>' in text is text (as gpt2's encode_ordinary); decode prints the EOT token as it
    assert tok.eot not in tok.encode(f'a {BPE_EOT} b') and tok.decode(tok.encode(f'a {BPE_EOT} b')) == f'a {BPE_EOT} b'
    assert tok.decode(tok.encode('The end.') + [tok.eot]) == 'The end.' + BPE_EOT


def test_bpe_bad_input(tmp_path):
    with pytest.raises(ValueError, match='vocab_size'):
        train_bpe(['some text'], 257)
    with pytest.raises(ValueError, match='tokenizer_json'):
        get_tokenizer({'tokenizer': 'bpe'})
    with pytest.raises(ValueError, match='tokenizer.json'):
        get_tokenizer({'tokenizer': 'bpe', 'tokenizer_json': '{"not": "a tokenizer"}'})
    (tmp_path / 'meta.json').write_text(json.dumps({'tokenizer': 'bpe', 'path': 'tokenizer.json', 'vocab_size': 300}))
    with pytest.raises(FileNotFoundError, match='tokenizer.json'):
        load_meta(tmp_path)


def test_bpe_checkpoint_samples_without_data_dir(repo, shared, tmp_path):
    data, out = tmp_path / 'data', tmp_path / 'out'
    p = subprocess.run([sys.executable, 'data/tinystories/prepare.py', '--vocab_size', '512', '--out_dir', data,
                        '--input', shared / 'data/tinystories/train.txt', shared / 'data/tinystories/valid.txt',
                        '--max_docs', '300', '--num_proc', '1'], cwd=repo, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    meta = load_meta(data)
    assert 'path' not in meta and meta['tokenizer_json'] == (data / 'tokenizer.json').read_text(encoding='utf-8')
    p = subprocess.run([sys.executable, 'train.py', f'--data_dir={data}', f'--out_dir={out}', '--n_layer=1', '--n_head=2',
                        '--n_embd=32', '--block_size=32', '--batch_size=4', '--gradient_accumulation_steps=1',
                        '--max_iters=4', '--eval_interval=4', '--eval_iters=1', '--warmup_iters=1', '--lr_decay_iters=4',
                        '--progress=False'], cwd=repo, env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    shutil.rmtree(data)
    p = subprocess.run([sys.executable, 'sample.py', f'--out_dir={out}', '--start=Once upon a time \U0001F600',
                        '--num_samples=1', '--max_new_tokens=20', '--device=cpu'], cwd=repo, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith('Once upon a time \U0001F600') and len(p.stdout) > len('Once upon a time \U0001F600\n---')
