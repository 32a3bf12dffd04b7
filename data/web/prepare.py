"""
Prepare a large web corpus (FineWeb-Edu, OpenWebText, any text dataset) for training: documents are
streamed through `datasets`, tokenized with GPT-2 BPE in parallel worker processes (EOT after each
document) and written as fixed-size uint16 shards val_000000.bin, ..., train_000000.bin, ... plus a
meta.json that lists them (tokens.py reads them as one array per split; a document may continue
from one shard into the next).
- source: --input local .parquet / .jsonl files (or directories of them), or --dataset NAME [--name
  CONFIG] from the Hugging Face hub, streamed (nothing is downloaded up front).
- val: the first --val_docs documents; train: all the rest.
- resumable: a crash (or --max_shards) leaves every finished shard and a state file; running the
  same command again continues after the last finished shard without tokenizing it again, nor
  reading it again: the state file holds the stream's own position (datasets' IterableDataset
  state_dict(), restored with load_state_dict(): earlier files of the input or of the hub dataset
  are not read again, except that datasets reopens the file before the current one to skip to the
  position). The per-document state copy costs a few microseconds, next to tokenizing it.
  A shard is written under a temporary name and renamed once complete.
e.g. python data/web/prepare.py --dataset HuggingFaceFW/fineweb-edu --name sample-10BT --out_dir data/fineweb_edu
     python data/web/prepare.py --input ~/openwebtext/*.parquet --out_dir data/openwebtext --num_proc 16
"""
import glob
import json
import os
import sys
from collections import deque
from multiprocessing import Pool

import numpy as np
from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # repo root, for tokenizer.py
from configurator import check_out_path
from configurator import ArgumentParser
from tokenizer import get_tokenizer

FORMATS = {'.parquet': 'parquet', '.jsonl': 'json', '.json': 'json'}
STATE = 'prepare_state.json'
META = dict(tokenizer='gpt2', path=None)


def input_files(specs):
    """Files named or found in directories, sorted (the document order must be the same every run)."""
    files = []
    for spec in specs:
        found = sorted(f for f in glob.glob(os.path.join(spec, '**', '*'), recursive=True)
                       if f.endswith(tuple(FORMATS))) if os.path.isdir(spec) else [spec]
        for f in found:
            if not os.path.isfile(f):
                raise FileNotFoundError(f"--input file not found: {f}")
            if not f.endswith(tuple(FORMATS)):
                raise ValueError(f"--input {f}: unsupported format (use {', '.join(FORMATS)})")
        files += found
    if not files:
        raise FileNotFoundError(f"no {'/'.join(FORMATS)} files in --input {' '.join(specs)}")
    kinds = {FORMATS[os.path.splitext(f)[1]] for f in files}
    if len(kinds) > 1:
        raise ValueError("--input mixes parquet and json files; prepare them separately")
    return [os.path.abspath(f) for f in files], kinds.pop()


def documents(settings):
    """The corpus as a streaming dataset of rows, in a fixed order."""
    from datasets import load_dataset
    if settings['files']:
        return load_dataset(settings['format'], data_files=settings['files'], split='train', streaming=True)
    return load_dataset(settings['dataset'], name=settings['name'], split=settings['split'], streaming=True)


def init_worker():
    global tok
    tok = get_tokenizer(META)


def tokenize(text):
    text = (text or '').strip()
    if not text:
        return np.array([], dtype=np.uint16)
    return np.array(tok.encode(text) + [tok.eot], dtype=np.uint16)


def write_atomic(path, data):
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Fills fixed-size shards from a stream of documents. After each shard it records where the
    next one starts (document index, tokens of that document already written, the document stream's
    state before that document) in the state file."""

    def __init__(self, out_dir, state, shard_tokens, max_shards=None):
        self.out_dir, self.state, self.max_shards = out_dir, state, max_shards
        self.buf, self.n, self.split = np.empty(shard_tokens, dtype=np.uint16), 0, None
        self.written = 0  # shards written in this run

    def add(self, split, doc, ids, stream, skip=0):
        """Append document `doc` (its tokens from `skip` on); stream: the document stream's states
        (before it, after it). True when max_shards are written."""
        if split != self.split:
            self.flush(doc, 0, stream[0])  # a split's last shard may be short
            self.split = split
            if self.enough():
                return True
        pos = skip
        while pos < len(ids):
            take = min(len(self.buf) - self.n, len(ids) - pos)
            self.buf[self.n:self.n + take] = ids[pos:pos + take]
            self.n, pos = self.n + take, pos + take
            if self.n == len(self.buf):
                done = pos == len(ids)
                self.flush(doc + done, pos % len(ids), stream[done])
                if self.enough():
                    return True
        return False

    def enough(self):
        return self.max_shards is not None and self.written >= self.max_shards

    def flush(self, next_doc, next_offset, next_stream):
        if not self.n:
            return
        os.makedirs(self.out_dir, exist_ok=True)  # only now: a run that fails before its first shard leaves nothing
        shards = self.state['shards'].setdefault(self.split, [])
        name = f'{self.split}_{len(shards):06d}.bin'
        write_atomic(os.path.join(self.out_dir, name), self.buf[:self.n].tobytes())
        shards.append({'file': name, 'tokens': int(self.n)})
        self.n, self.written = 0, self.written + 1
        self.state.update(doc=int(next_doc), offset=int(next_offset), stream=next_stream)
        write_atomic(os.path.join(self.out_dir, STATE), json.dumps(self.state, indent=1).encode())


def main():
    parser = ArgumentParser(description='Prepare a large web corpus as GPT-2 BPE token shards (resumable).')
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument('--input', nargs='+', metavar='PATH', help='local .parquet or .jsonl files, or directories of them')
    src.add_argument('--dataset', help='a Hugging Face hub dataset, streamed, e.g. HuggingFaceFW/fineweb-edu')
    parser.add_argument('--name', help='the hub dataset config, e.g. sample-10BT')
    parser.add_argument('--split', default='train', help='the hub dataset split to read')
    parser.add_argument('--text_column', default='text')
    parser.add_argument('--out_dir', default=HERE)
    parser.add_argument('--shard_tokens', type=int, default=100_000_000, help='tokens per shard (200 MB as uint16)')
    parser.add_argument('--val_docs', type=int, default=10_000, help='the first this many documents are the val split')
    parser.add_argument('--max_docs', type=int, help='stop the corpus after this many documents (quick runs)')
    parser.add_argument('--max_shards', type=int, help='stop once this run has written this many shards (run again to go on)')
    parser.add_argument('--num_proc', type=int, default=os.cpu_count(), help='tokenizer processes')
    args = parser.parse_args()

    try:
        for key in ('shard_tokens', 'val_docs', 'num_proc'):
            if getattr(args, key) < 1:
                raise ValueError(f"--{key} must be >= 1")
        files, fmt = input_files(args.input) if args.input else (None, None)
        check_out_path(args.out_dir, files or [], directory=True)
        init_worker()  # also checks that the GPT-2 BPE files load, before anything is written
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    # everything that decides the shards' content; a resumed run must use the same
    settings = dict(files=files, format=fmt, dataset=args.dataset, name=args.name, split=args.split,
                    text_column=args.text_column, shard_tokens=args.shard_tokens, val_docs=args.val_docs,
                    max_docs=args.max_docs, tokenizer=META['tokenizer'])
    state_path = os.path.join(args.out_dir, STATE)
    if os.path.isfile(state_path):
        try:
            with open(state_path, encoding='utf-8') as f:
                state = json.load(f)
            if not isinstance(state.get('settings'), dict):
                raise ValueError("no settings")
        except (ValueError, AttributeError) as e:  # written atomically, so only damaged from outside
            sys.exit(f"error: {state_path} is damaged ({type(e).__name__}: {str(e)[:200]}); delete {args.out_dir} "
                     "to prepare afresh")
        if state['settings'] != settings:
            changed = sorted(k for k in settings if settings[k] != state['settings'].get(k))
            sys.exit(f"error: {args.out_dir} holds a preparation with other settings ({', '.join(changed)}); "
                     "use another --out_dir or delete it")
        if state.get('done'):
            print(f"{args.out_dir} is already prepared")
            return
        if state['doc'] and state.get('stream') is None:
            sys.exit(f"error: {state_path} was written by an earlier prepare.py (no stream position); finish it with "
                     "that version or delete it and start again")
    elif os.path.isfile(os.path.join(args.out_dir, 'meta.json')):
        sys.exit(f"error: {args.out_dir} already holds a prepared dataset; use another --out_dir")
    else:
        state = dict(settings=settings, doc=0, offset=0, stream=None, shards={}, done=False)

    try:
        rows = documents(settings)
        if args.max_docs:
            rows = rows.take(args.max_docs)
        if state['stream'] is not None:
            rows.load_state_dict(state['stream'])  # the stream goes on where the last finished shard ended
        positions = deque()  # per document read, the stream's state (before it, after it), for the shard ends

        def texts():
            before = state['stream'] or rows.state_dict()  # (a loaded state shows only once iterating)
            for row in rows:
                after = rows.state_dict()
                positions.append((before, after))
                yield row[args.text_column]
                before = after

        writer = ShardWriter(args.out_dir, state, args.shard_tokens, args.max_shards)
        done_before = sum(len(s) for s in state['shards'].values())
        pool = Pool(args.num_proc, init_worker) if args.num_proc > 1 else None
        ids_iter = pool.imap(tokenize, texts(), chunksize=16) if pool else map(tokenize, texts())
        pbar = tqdm(ids_iter, initial=state['doc'], desc=f'tokenizing ({done_before} shards done before)', unit='doc',
                    disable=None)  # a bar on terminals, not in logs
        first, next_doc, stopped = state['doc'], state['doc'], False
        for doc, ids in enumerate(pbar, start=first):
            stopped = writer.add('val' if doc < args.val_docs else 'train', doc, ids, positions.popleft(),
                                 skip=state['offset'] if doc == first else 0)
            if stopped:
                break
            next_doc = doc + 1
        else:
            writer.flush(next_doc, 0, None)  # the last, short shard
        pbar.close()
        if pool:
            pool.terminate()
    except KeyError as e:
        sys.exit(f"error: the documents have no {e} column (set --text_column)")
    except Exception as e:  # unreadable files, an unreachable hub, a full disk: finished shards stay for a rerun
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ''
        sys.exit(f"error: preparing stopped: {type(e).__name__}: {msg}")
    if stopped:
        print(f"stopped after {writer.written} shards this run (--max_shards); run the same command again to go on")
        return

    counts = {split: sum(s['tokens'] for s in state['shards'].get(split, [])) for split in ('train', 'val')}
    if not counts['train'] or not counts['val']:
        sys.exit(f"error: the corpus gave {counts['val']:,} val and {counts['train']:,} train tokens; both splits need "
                 f"documents (it has fewer than --val_docs={args.val_docs} + 1 documents?)")
    source = f"files: {', '.join(files)}" if files else f"{args.dataset} {args.name or ''} {args.split} (Hugging Face hub)"
    meta = dict(META, vocab_size=tok.vocab_size, dtype='uint16', eot=tok.eot, bos=tok.bos,
                train_tokens=counts['train'], val_tokens=counts['val'], source=source, shard_tokens=args.shard_tokens,
                shards={split: state['shards'].get(split, []) for split in ('train', 'val')})
    write_atomic(os.path.join(args.out_dir, 'meta.json'), json.dumps(meta, indent=1).encode())
    state['done'] = True
    write_atomic(state_path, json.dumps(state, indent=1).encode())
    print(f"{counts['train']:,} train and {counts['val']:,} val tokens in {sum(map(len, meta['shards'].values()))} shards in {args.out_dir}")


if __name__ == '__main__':
    main()
