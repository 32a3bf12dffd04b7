"""
Prepare TinyStories (Eldan & Li 2023, ~2.1M short stories) for training: one document per story,
tokenized in parallel, written as train.bin / val.bin (uint16) + meta.json.
- source: the Hugging Face hub (roneneldan/TinyStories, train/validation splits) when reachable or cached,
  else --input local files: TRAIN [VAL] as .txt (stories separated by blank lines, or by <|endoftext|> lines
  as in the hub's raw TinyStories*.txt), .jsonl (field 'text') or .parquet (column 'text'). With one file
  the last 10% of its stories are val.
- tokenizer: GPT-2 BPE (default; EOT 50256 appended after each story, as nanoGPT's openwebtext), or
  --vocab_size N: a byte-level BPE of N tokens trained on the train split (tokenizer.py's train_bpe; EOT appended
  after each story), saved as tokenizer.json beside the data; small vocabularies, as llama2.c's TinyStories models
  use, make small models several times faster than the 50k-token GPT-2 head; or
  --tokenizer llama2c --tokenizer_path tok512.bin (BOS before each story, as llama2.c pretokenizes) so
  llama2.c models such as stories260K can be evaluated on the same text.
- not resumable (data/web/prepare.py is): it takes seconds to minutes, a rerun starts over.
e.g. python data/tinystories/prepare.py --input ../shared/data/tinystories/train.txt ../shared/data/tinystories/valid.txt
     python data/tinystories/prepare.py --vocab_size 4096 --input ../shared/data/tinystories/train.txt ../shared/data/tinystories/valid.txt
"""
import json
import os
import re
import sys
import urllib.error
import urllib.request
from multiprocessing import Pool

import numpy as np
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # repo root, for tokenizer.py
from configurator import check_out_path
from configurator import ArgumentParser
from tokenizer import get_tokenizer, train_bpe

SUFFIXES = ('.txt', '.jsonl', '.parquet')


def read_docs(path):
    if path.endswith('.jsonl'):
        with open(path, encoding='utf-8') as f:
            return [json.loads(line)['text'] for line in f if line.strip()]
    if path.endswith('.parquet'):
        import pyarrow.parquet as pq
        return pq.read_table(path, columns=['text']).column('text').to_pylist()
    with open(path, encoding='utf-8') as f:
        text = f.read()
    docs = text.split('<|endoftext|>') if '<|endoftext|>' in text else re.split(r'\n\s*\n', text)
    return [d for d in docs if d.strip()]


def hub_offline():
    return os.environ.get('HF_HUB_OFFLINE', '').upper() in ('1', 'ON', 'YES', 'TRUE')


def load_hub():
    # probe the hub with a short timeout: unreachable networks can make datasets retry for minutes
    if not hub_offline():
        url = os.environ.get('HF_ENDPOINT', 'https://huggingface.co') + '/api/datasets/roneneldan/TinyStories'
        try:
            urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=5)
        except urllib.error.HTTPError:
            pass  # the hub answered
        except OSError:
            os.environ['HF_HUB_OFFLINE'] = '1'  # unreachable: only a local cached copy can work (set before import)
    reason = 'the hub is unreachable (or HF_HUB_OFFLINE is set) and the dataset is not cached' if hub_offline() else None
    try:
        from datasets import load_dataset
        ds = load_dataset('roneneldan/TinyStories')
    except Exception as e:
        sys.exit(f"error: cannot load roneneldan/TinyStories from the Hugging Face hub: "
                 f"{reason or str(e).splitlines()[0]}; pass local files with --input TRAIN [VAL], "
                 f"e.g. --input ../shared/data/tinystories/train.txt ../shared/data/tinystories/valid.txt")
    return ds['train'], ds['validation']


def stories_of(src):
    """The stories of a split (a list from --input files, or a Hugging Face dataset); a new pass on every call."""
    return src if isinstance(src, list) else (t for batch in src.iter(batch_size=1000) for t in batch['text'])


def init_worker(meta):
    global tok
    tok = get_tokenizer(meta)


def tokenize(text):
    text = text.strip()
    if not text:
        return np.array([], dtype=np.uint16)
    ids = tok.encode(text)
    # llama2c: BOS before each story (as llama2.c); gpt2 has no BOS: EOT after each story (as nanoGPT)
    ids = [tok.bos] + ids if tok.bos is not None else ids + [tok.eot]
    return np.array(ids, dtype=np.uint16)


if __name__ == '__main__':
    parser = ArgumentParser(description='Prepare TinyStories (GPT-2 BPE, a BPE trained on it, or llama2.c tokenizer).')
    parser.add_argument('--input', nargs='+', metavar='FILE', help='local TRAIN [VAL] files (.txt/.jsonl/.parquet) instead of the hub')
    parser.add_argument('--tokenizer', choices=['gpt2', 'bpe', 'llama2c'], help='default: bpe with --vocab_size, else gpt2')
    parser.add_argument('--vocab_size', type=int, help='train a byte-level BPE of this many tokens (e.g. 4096) on the train split')
    parser.add_argument('--tokenizer_path', help='llama2.c tokenizer.bin (for --tokenizer llama2c)')
    parser.add_argument('--out_dir', help='default: data/tinystories (gpt2), data/tinystories_bpe<vocab_size> or data/tinystories_llama2c')
    parser.add_argument('--num_proc', type=int, default=os.cpu_count(), help='tokenizer processes')
    parser.add_argument('--max_docs', type=int, help='at most this many stories per split (quick runs)')
    args = parser.parse_args()
    args.tokenizer = args.tokenizer or ('bpe' if args.vocab_size else 'gpt2')
    out_dir = args.out_dir or (HERE if args.tokenizer == 'gpt2' else HERE + '_bpe' + str(args.vocab_size)
                               if args.tokenizer == 'bpe' else HERE + '_' + args.tokenizer)

    # check every input before writing anything
    if args.input:
        if len(args.input) > 2:
            sys.exit("error: --input takes one or two files (TRAIN [VAL])")
        for path in args.input:
            if not os.path.isfile(path):
                sys.exit(f"error: --input file not found: {path}")
            if not path.endswith(SUFFIXES):
                sys.exit(f"error: --input {path}: unsupported format (use {', '.join(SUFFIXES)})")
    if args.tokenizer == 'llama2c' and not args.tokenizer_path:
        sys.exit("error: --tokenizer llama2c needs --tokenizer_path (e.g. ../shared/models/stories260K/tok512.bin)")
    if (args.tokenizer == 'bpe') != (args.vocab_size is not None):
        sys.exit("error: --vocab_size goes with --tokenizer bpe (the default when it is given) and only with it")
    try:
        check_out_path(out_dir, args.input or [], directory=True)
    except ValueError as e:
        sys.exit(f"error: --out_dir: {e}")
    meta = dict(tokenizer=args.tokenizer, path=os.path.abspath(args.tokenizer_path) if args.tokenizer == 'llama2c' else None)
    if args.tokenizer != 'bpe':  # a bpe tokenizer is trained once the stories are read
        try:
            init_worker(meta)  # also validates the tokenizer (file present, BPE files cached) in this process
        except (ValueError, FileNotFoundError) as e:
            sys.exit(f"error: {e}")
        assert tok.vocab_size <= 2 ** 16, 'uint16 ids'

    # documents: (list of str or HF dataset, count) per split
    if args.input:
        docs = []
        for path in args.input:
            try:
                docs.append(read_docs(path))
            except Exception as e:  # not UTF-8 text / bad json / missing 'text' field / unreadable parquet
                sys.exit(f"error: cannot read --input {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if len(docs) == 1:
            n = int(len(docs[0]) * 0.9)
            docs = [docs[0][:n], docs[0][n:]]
        docs = [d[:args.max_docs] for d in docs]
        if not docs[0] or not docs[1]:
            sys.exit("error: --input must give at least one train and one val story")
        splits = {split: (d, len(d)) for split, d in zip(['train', 'val'], docs)}
        source = 'files: ' + ', '.join(os.path.abspath(p) for p in args.input) + (' (last 10% of stories = val)' if len(args.input) == 1 else '')
    else:
        splits = {}
        for split, ds in zip(['train', 'val'], load_hub()):
            if args.max_docs:
                ds = ds.select(range(min(args.max_docs, len(ds))))
            splits[split] = (ds, len(ds))
        source = 'roneneldan/TinyStories (Hugging Face hub): train, validation splits'

    if args.tokenizer == 'bpe':  # on the stories exactly as tokenize() encodes them; the val split stays unseen
        train_docs, n_train = splits['train']
        print(f"training a byte-level BPE of {args.vocab_size} tokens on {n_train:,} train stories")
        try:
            tokenizer_json = train_bpe((t.strip() for t in stories_of(train_docs)), args.vocab_size, length=n_train, progress=True)
        except ValueError as e:
            sys.exit(f"error: {e}")
        meta = dict(tokenizer='bpe', tokenizer_json=tokenizer_json)
        init_worker(meta)
        if tok.vocab_size < args.vocab_size:
            print(f"note: the text has merges for {tok.vocab_size} tokens only, not {args.vocab_size}")
        # the workers below are forked after tokenizers used its threads: they encode on one thread each
        os.environ['TOKENIZERS_PARALLELISM'] = 'false'  # (and tokenizers would warn about the fork otherwise)

    # tokenize in parallel, streaming each split's ids into a temp file (the full train split is ~470M tokens)
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    pool = Pool(args.num_proc, init_worker, (meta,)) if args.num_proc > 1 else None
    for split, (docs, n_docs) in splits.items():
        texts = stories_of(docs)
        ids_iter = pool.imap(tokenize, texts, chunksize=64) if pool else map(tokenize, texts)
        n_tokens = n_stories = 0
        with open(os.path.join(out_dir, f'{split}.bin.tmp'), 'wb') as f:
            for ids in tqdm(ids_iter, total=n_docs, desc=f'tokenizing {split}', unit='story'):
                f.write(ids.tobytes())
                n_tokens += len(ids)
                n_stories += len(ids) > 0
        counts[split] = n_tokens
        print(f"{split} has {n_stories:,} stories, {n_tokens:,} tokens")
    if pool:
        pool.close()

    names = ['train.bin', 'val.bin', 'meta.json']
    if args.tokenizer == 'bpe':  # the file beside the data, loadable by tokenizers/transformers; meta.json names it
        with open(os.path.join(out_dir, 'tokenizer.json.tmp'), 'w', encoding='utf-8') as f:
            f.write(meta.pop('tokenizer_json'))
        meta['path'] = 'tokenizer.json'
        names.append('tokenizer.json')
    meta.update(vocab_size=tok.vocab_size, dtype='uint16', eot=tok.eot, bos=tok.bos,
                train_tokens=counts['train'], val_tokens=counts['val'], source=source)
    with open(os.path.join(out_dir, 'meta.json.tmp'), 'w') as f:
        json.dump(meta, f, indent=1)
    for name in names:  # all complete: move into place
        os.replace(os.path.join(out_dir, name + '.tmp'), os.path.join(out_dir, name))
    print(f"wrote {', '.join(names)} to {out_dir}")
