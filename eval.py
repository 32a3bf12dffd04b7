"""
Evaluate checkpoints: perplexity, layer-map sweeps, multiple choice; `compare` (growth-versus-scratch speedup from
logs) is compare.py's, kept here as a subcommand.

  python eval.py ppl out/scratch out/grown/best.pt llama2c:../shared/models/stories260K/stories260K.bin --data data/tinystories
  python eval.py sweep out/ts4 --data data/tinystories --generate monotone,methods --length 8 --out sweep.csv
  python eval.py compare scratch=out/scratch grown=out/grown --out compare.png   (= python compare.py ...)
  python eval.py mc out/ts4 --file choices.jsonl

A checkpoint is a .pt file, an out_dir (its best.pt, else last.pt), or an import spec (hf:NAME, llama2c:PATH)
handled by convert.py. --data is a prepared data dir (train.bin/val.bin/meta.json; --split picks the file) or a
raw text file, which is encoded with each checkpoint's own tokenizer. Every checkpoint is scored on the same
tokens: contiguous, non-overlapping windows of block_size from the start of the split, up to --tokens.
ppl and sweep run on every rank under torchrun (windows are split across ranks, sums all-reduced).
"""
import argparse
import csv
import itertools
import json
import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from compare import add_arguments as add_compare_arguments, atomic_write, cmd_compare, pyplot, save_fig
from configurator import ArgumentParser, check_out_path

# -----------------------------------------------------------------------------
# loading models and tokens

def load_model(spec, device):
    """-> (model in eval mode on device, tokenizer meta dict or None)."""
    from checkpoint import build_model, load_any
    from tokenizer import check_meta
    ckpt = load_any(spec)
    if ckpt['tokenizer'] is not None:
        check_meta(ckpt['tokenizer'], f"{spec}: tokenizer")
    return build_model(ckpt).to(device).eval(), ckpt['tokenizer']


def load_tokens(data, split, meta):
    """Token ids of `data` -> (ids, tokenizer meta): a prepared dir's {split}.bin with its meta.json, or a raw text
    file encoded with `meta`'s tokenizer."""
    from tokenizer import check_same_tokenizer, get_tokenizer
    from tokens import TokenData
    if os.path.isdir(data):
        tokens = TokenData(data, splits=(split,))
        data_meta = tokens.meta or {}
        if meta and not data_meta:
            raise ValueError(f"{data} has no meta.json: nothing says it was encoded with the checkpoint's {meta['tokenizer']!r} tokenizer")
        if meta:
            check_same_tokenizer(os.path.join(data, 'meta.json'), data_meta, meta)
        return tokens.tokens(split), data_meta or None
    if not os.path.isfile(data):
        raise FileNotFoundError(f"--data {data}: no such file or directory")
    if meta is None:
        raise ValueError(f"the checkpoint carries no tokenizer, so raw text {data} cannot be encoded; pass a prepared data dir")
    with open(data, encoding='utf-8') as f:
        return np.array(get_tokenizer(meta).encode(f.read()), dtype=np.int64), meta


def context_length(args, models):
    """One window length for all models (so they see the same tokens): --block_size, or the smallest block_size."""
    limit = min(m.config.block_size for m in models)
    if args.block_size > limit:
        raise ValueError(f"--block_size {args.block_size} exceeds the model's block_size {limit}")
    return args.block_size or limit


def windows(ids, T, budget):
    """The first budget tokens as contiguous, non-overlapping windows: inputs X [n,T] and next-token targets Y [n,T]."""
    n = min(budget, len(ids) - 1) // T
    if n == 0:
        raise ValueError(f"one window needs {T + 1} tokens: the data has {len(ids)}, --tokens is {budget}")
    buf = torch.from_numpy(np.asarray(ids[:n * T + 1], dtype=np.int64))
    return buf[:-1].view(n, T), buf[1:].view(n, T)


def utf8_bytes(meta, Y):
    """UTF-8 byte count of the text the evaluated (target) tokens decode to; eot/bos tokens stand for no text and
    count 0 bytes (their loss still counts). The denominator of bits-per-byte; 0 without a tokenizer."""
    from tokenizer import get_tokenizer
    if meta is None:
        return 0
    tok = get_tokenizer(meta)
    special = {tok.eot, tok.bos} - {None}
    return len(tok.decode([i for i in Y.flatten().tolist() if i not in special]).encode('utf-8'))

# -----------------------------------------------------------------------------
# evaluation, on one process or all ranks of a torchrun

def setup(args):
    """Pick the device and dtype (device.py's policy); join the process group under torchrun.
    -> (device, autocast context)."""
    from device import choose
    policy = choose(args.device, args.dtype)
    device = policy.device
    if int(os.environ.get('WORLD_SIZE', 1)) > 1:
        import torch.distributed as dist
        cuda = policy.device_type == 'cuda'
        dist.init_process_group('nccl' if cuda else 'gloo')
        if cuda:
            device = f"cuda:{os.environ['LOCAL_RANK']}"
            torch.cuda.set_device(device)
    return device, policy.autocast()


def rank_world():
    import torch.distributed as dist
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


@torch.no_grad()
def nll_sum(model, X, Y, batch_size, device, ctx, progress=None):
    """Summed next-token NLL (nats) and token count over all windows; each rank takes windows rank::world."""
    rank, world = rank_world()
    top = max(X.max().item(), Y.max().item())
    if top >= model.config.vocab_size:
        raise ValueError(f"token id {top} is outside the model's vocab ({model.config.vocab_size})")
    Xr, Yr = X[rank::world].contiguous(), Y[rank::world].contiguous()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for i in tqdm(range(0, len(Xr), batch_size), desc=progress, disable=progress is None or rank != 0, leave=False):
        x, y = Xr[i:i + batch_size].to(device), Yr[i:i + batch_size].to(device)
        with ctx:
            logits, _ = model(x)
        total[0] += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction='sum').double()
        total[1] += y.numel()
    if world > 1:
        import torch.distributed as dist
        dist.all_reduce(total)
    return total[0].item(), int(total[1].item())


def score(model, X, Y, nbytes, args, device, ctx, progress=None):
    nll, n = nll_sum(model, X, Y, args.batch_size, device, ctx, progress)
    return {'tokens': n, 'loss': nll / n, 'ppl': math.exp(nll / n), 'bpb': nll / math.log(2) / nbytes if nbytes else None}

# -----------------------------------------------------------------------------
# ppl

def cmd_ppl(args):
    device, ctx = setup(args)
    models = [load_model(spec, device) for spec in args.checkpoints]
    T = context_length(args, [m for m, _ in models])
    rows = []
    for spec, (model, meta) in zip(args.checkpoints, models):
        ids, meta = load_tokens(args.data, args.split, meta)
        X, Y = windows(ids, T, args.tokens)
        rows.append({'checkpoint': spec, 'params': model.param_counts()['unique'], 'block_size': T,
                     **score(model, X, Y, utf8_bytes(meta, Y), args, device, ctx, progress=spec)})
    if rank_world()[0] != 0:
        return
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.data} ({args.split if os.path.isdir(args.data) else 'text'}), windows of {T} tokens\n")
    print("| checkpoint | params | tokens | loss | ppl | bits/byte |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        bpb = f"{r['bpb']:.4f}" if r['bpb'] is not None else "-"
        print(f"| {r['checkpoint']} | {r['params']:,} | {r['tokens']:,} | {r['loss']:.4f} | {r['ppl']:.3f} | {bpb} |")

# -----------------------------------------------------------------------------
# sweep: evaluate a model run with different layer maps (weight-tied, no training)

def parse_layer_map(s, n_src, where):
    """A sweep map, '0,1,1,2' or '0 1 1 2': the source layer each logical layer runs."""
    try:
        m = [int(t) for t in s.replace(',', ' ').split()]
    except ValueError:
        raise ValueError(f"{where}: layer map {s.strip()!r} has a non-integer entry") from None
    if not m:
        raise ValueError(f"{where}: empty layer map")
    bad = [i for i in m if not 0 <= i < n_src]
    if bad:
        raise ValueError(f"{where}: layer map {s.strip()!r} uses layer {bad[0]}, the source has layers 0..{n_src - 1}")
    return m


def method_maps(n, T):
    """Depth-growth recipes written as layer maps of length T over n source layers: grow.py's own
    orders (stack, interleave), then recipes only this sweep explores."""
    from grow import stack_order, interleave_order
    maps = [('stack', [i for _, i in stack_order(n, n_layer=T)]),             # G_stack: f0 f1 .. f0 f1 ..
            ('interleave', [i for _, i in interleave_order(n, n_layer=T)])]  # each layer repeated in place
    if T >= n >= 3:  # ends kept, middle layers stretched: 0,1,1,1,2,2,2,3
        maps.append(('interleave_mid', [0] + [1 + i * (n - 2) // (T - 2) for i in range(T - 2)] + [n - 1]))
    for a in range(1, n + 1):  # two copies, SOLAR-style, at every split: layers [0,a) of one, then [b,n) of a second
        b = a + n - T          # (grow.py's dus is the symmetric a = n-m, b = m)
        if 0 <= b < n:
            maps.append((f'dus[:{a}]+[{b}:]', list(range(a)) + list(range(b, n))))
    for i, j in itertools.combinations_with_replacement(range(n), 2):  # partial stacking: block i..j repeated r times
        size, extra = j - i + 1, T - n
        if extra > 0 and extra % size == 0:
            r = extra // size + 1
            maps.append((f'repeat[{i}:{j + 1}]x{r}', list(range(i)) + list(range(i, j + 1)) * r + list(range(j + 1, n))))
    return maps


def keep_end_maps(n, T, max_maps, seed, monotone):
    """Maps that keep the first and last layer in place (the embedding-facing and head-facing layers); the T-2 middle entries
    are any layers (n**(T-2) maps) or, with monotone, a non-decreasing sequence. More than max_maps: a seeded
    uniform random sample of max_maps of them."""
    k = T - 2
    if k < 0:
        raise ValueError(f"--length {T}: maps that keep both ends need length >= 2")
    total = math.comb(k + n - 1, k) if monotone else n ** k
    if total <= max_maps:
        mids = itertools.combinations_with_replacement(range(n), k) if monotone else itertools.product(range(n), repeat=k)
    else:
        rng = random.Random(seed)
        if monotone:  # stars and bars: k sorted distinct positions among k+n-1 <-> a sorted multiset of k layers
            picked = set()
            while len(picked) < max_maps:
                picked.add(tuple(p - j for j, p in enumerate(sorted(rng.sample(range(k + n - 1), k)))))
            mids = sorted(picked)
        else:
            mids = sorted(tuple((x // n ** d) % n for d in reversed(range(k))) for x in rng.sample(range(total), max_maps))
        print(f"{'monotone' if monotone else 'keep_ends'}: sampled {max_maps} of {total} maps (--seed {seed})", file=sys.stderr)
    return [('', [0, *mid, n - 1]) for mid in mids]


def any_maps(n, T, max_maps, seed):
    """Maps with no constraint at all (n**T of them; more than max_maps: a seeded uniform sample): the control group
    for keep_ends, to see whether keeping the first and last layer in place matters."""
    total = n ** T
    picks = range(total) if total <= max_maps else sorted(random.Random(seed).sample(range(total), max_maps))
    if total > max_maps:
        print(f"any: sampled {max_maps} of {total} maps (--seed {seed})", file=sys.stderr)
    return [('', [(x // n ** d) % n for d in reversed(range(T))]) for x in picks]


def keeps_ends(m, n):
    return m[0] == 0 and m[-1] == n - 1


def sweep_summary(rows, n_src, base_ppl):
    """Maps that keep both ends vs the others (count, best and median ppl), and how many beat the base model."""
    groups = {'keep both ends': [r['ppl'] for r in rows if keeps_ends(r['map'], n_src)],
              'other maps': [r['ppl'] for r in rows if not keeps_ends(r['map'], n_src)]}
    return {name: {'n': len(p), 'best': min(p), 'median': float(np.median(p))} if p else {'n': 0} for name, p in groups.items()
            } | {'better than base': sum(r['ppl'] < base_ppl for r in rows)}


def text_lines(path, flag):
    """The lines of a text file given as `flag`, or one ValueError naming it (a directory, binary, unreadable)."""
    try:
        with open(path, encoding='utf-8') as f:
            return f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{flag} {path}: cannot read it as text ({getattr(e, 'strerror', None) or e})") from None


def sweep_maps(args, n_src):
    """-> [(label, map)] from --maps, --maps_file and --generate, duplicates dropped (a non-empty label wins)."""
    maps = {}
    def add(label, m):
        if not maps.get(tuple(m)):
            maps[tuple(m)] = label
    for i, s in enumerate(args.maps.split(';') if args.maps else []):
        add('', parse_layer_map(s, n_src, f"--maps entry {i + 1}"))
    if args.maps_file:
        for lineno, line in enumerate(text_lines(args.maps_file, '--maps_file'), 1):
            if line.split('#')[0].strip():
                add('', parse_layer_map(line.split('#')[0], n_src, f"{args.maps_file}:{lineno}"))
    for kind in args.generate.split(',') if args.generate else []:
        if kind == 'methods':
            found = method_maps(n_src, args.length)
        elif kind in ('keep_ends', 'monotone'):
            found = keep_end_maps(n_src, args.length, args.max_maps, args.seed, kind == 'monotone')
        elif kind == 'any':
            found = any_maps(n_src, args.length, args.max_maps, args.seed)
        else:
            raise ValueError(f"--generate: unknown kind {kind!r} (keep_ends, monotone, any, methods)")
        for label, m in found:
            add(label, m)
    if not maps:
        raise ValueError("no layer maps: give --maps, --maps_file or --generate")
    return [(label, list(m)) for m, label in maps.items()]


def with_layer_map(base, m):
    """A GPT that runs base's blocks in the order m, sharing base's tensors (assign=True: no copies)."""
    from model import GPT, GPTConfig
    cfg = base.config.to_dict()
    cfg['layer_map'] = list(m)
    if isinstance(cfg.get('attn_window'), list):  # per logical layer: each position keeps its source layer's window
        cfg['attn_window'] = [cfg['attn_window'][i] for i in m]
    model = GPT(GPTConfig.from_dict(cfg))
    model.load_state_dict(base.state_dict(), assign=True)
    return model.to(base.lm_head.weight.device).eval()  # moves the buffers (rope tables) the state_dict lacks


def plot_sweep(rows, n_src, base, title, path, plt):
    """The layer-map figure: one row per map, cells coloured (and labelled) by source layer, ppl at the right."""
    W = max(len(r['map']) for r in rows)
    grid = np.full((len(rows), W), np.nan)
    for i, r in enumerate(rows):
        grid[i, :len(r['map'])] = r['map']
    fig, ax = plt.subplots(figsize=(2.5 + 0.45 * W, 1.4 + 0.26 * len(rows)))
    cmap = plt.get_cmap('viridis', n_src)
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-0.5, vmax=n_src - 0.5, aspect='auto', interpolation='nearest')
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, int(v), ha='center', va='center', fontsize=8, color='white' if v < n_src / 2 else 'black')
    ax.text(W - 0.3, -0.6, 'ppl', ha='left', va='bottom', fontsize=8, weight='bold', clip_on=False)
    above = sum(r['ppl'] < base for r in rows)  # rows are sorted: the maps above the line beat the base model
    ax.axhline(above - 0.5, color='red', lw=1.5)
    ax.text(-0.5, above - 0.5, f"base {base:.2f}", color='red', ha='right', va='center', fontsize=7, clip_on=False)
    for i, r in enumerate(rows):
        ax.text(W - 0.3, i, f"{r['ppl']:.2f}", ha='left', va='center', fontsize=8, clip_on=False)
    ax.set_xticks(range(W))
    ax.set_yticks(range(len(rows)), [r['label'] for r in rows], fontsize=7)
    ax.tick_params(length=0)
    ax.set_xlabel('target layer (cell = source layer)')
    ax.set_title(f"{title}\nbase model ({n_src} layers): ppl {base:.2f}; rows sorted by ppl (right)", fontsize=9)
    fig.tight_layout()
    save_fig(fig, path, plt)


SWEEP_FIELDS = ['label', 'map', 'length', 'loss', 'ppl', 'bpb', 'tokens']


def read_sweep(path):
    """A sweep CSV -> its rows (the base model's first, then the maps by ppl), as cmd_sweep writes them."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--from_csv {path}: no such file")
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != SWEEP_FIELDS:
            raise ValueError(f"{path}: not a sweep CSV (columns {', '.join(SWEEP_FIELDS)})")
        try:
            rows = [{'label': r['label'], 'map': [int(x) for x in r['map'].split()], 'loss': float(r['loss']),
                     'ppl': float(r['ppl']), 'bpb': float(r['bpb']) if r['bpb'] else None, 'tokens': int(r['tokens'])}
                    for r in reader]
        except ValueError as e:
            raise ValueError(f"{path}: bad value ({e})") from None
    if len(rows) < 2 or rows[0]['label'] != 'base':
        raise ValueError(f"{path}: not a sweep CSV (the base model's row first, then the maps)")
    return rows


def cmd_sweep(args):
    if args.from_csv:
        return report_sweep(read_sweep(args.from_csv), args, args.from_csv)
    device, ctx = setup(args)
    model, meta = load_model(args.checkpoint, device)
    base = model.merged()  # plain: its logical layers become the source layers, adapters folded in, dense
    n_src = base.config.n_layer
    maps = sweep_maps(args, n_src)
    T = context_length(args, [base])
    ids, meta = load_tokens(args.data, args.split, meta)
    X, Y = windows(ids, T, args.tokens)
    nbytes = utf8_bytes(meta, Y)
    rank = rank_world()[0]
    base_score = score(base, X, Y, nbytes, args, device, ctx)
    rows = []
    bar = tqdm(maps, desc='maps', disable=rank != 0)
    for label, m in bar:
        rows.append({'label': label, 'map': m, **score(with_layer_map(base, m), X, Y, nbytes, args, device, ctx)})
        bar.set_postfix(ppl=f"{rows[-1]['ppl']:.2f}")
    rows.sort(key=lambda r: r['ppl'])
    if rank != 0:
        return
    rows_out = [{'label': 'base', 'map': list(range(n_src)), **base_score}] + rows
    def write_csv(tmp):
        with open(tmp, 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(SWEEP_FIELDS)
            for r in rows_out:
                w.writerow([r['label'], ' '.join(map(str, r['map'])), len(r['map']), f"{r['loss']:.6f}", f"{r['ppl']:.6f}",
                            '' if r['bpb'] is None else f"{r['bpb']:.6f}", r['tokens']])
    atomic_write(args.out, write_csv)
    print(f"wrote {args.out}", file=sys.stderr)
    report_sweep(rows_out, args, args.checkpoint)


def report_sweep(rows_out, args, source):
    """The sweep's summary (or JSON) and heatmap, beside --out (or the --from_csv file)."""
    base_score, rows = rows_out[0], rows_out[1:]
    n_src = len(base_score['map'])
    if args.json:
        print(json.dumps(rows_out, indent=2))
    else:
        print(f"{len(rows)} maps over {n_src} source layers, {rows[0]['tokens']:,} tokens each; base ppl {base_score['ppl']:.3f}")
        for r in rows[:5] + ([None] if len(rows) > 10 else []) + rows[max(5, len(rows) - 5):]:
            print("  ..." if r is None else f"  {r['ppl']:9.3f}  [{','.join(map(str, r['map']))}]  {r['label']}")
        for name, g in sweep_summary(rows, n_src, base_score['ppl']).items():
            print(f"{name}: {g} of {len(rows)} maps" if name == 'better than base' else
                  f"{name}: {g['n']} maps" + (f", best ppl {g['best']:.3f}, median {g['median']:.3f}" if g['n'] else ''))
    plt = pyplot()
    if plt:
        shown = rows[:args.plot_rows]
        title = f"{source}: layer maps, no training" + (f" (best {len(shown)} of {len(rows)})" if len(shown) < len(rows) else "")
        png = os.path.splitext(args.from_csv or args.out)[0] + '.png'
        plot_sweep(shown, n_src, base_score['ppl'], title, png, plt)
        print(f"wrote {png}", file=sys.stderr)

# -----------------------------------------------------------------------------
# mc: multiple choice by log-likelihood, lm-eval style

def encode_pair(tok, context, choice):
    """lm-eval's split: trailing spaces of the context move to the choice, the pair is encoded as one string and the
    choice's tokens are what follows the context's own encoding (so merges across the seam match plain text)."""
    n = len(context) - len(context.rstrip(' '))
    if n:
        context, choice = context[:-n], context[-n:] + choice
    ctx = tok.encode(context)
    whole = tok.encode(context + choice)
    if not ctx:  # condition on the document separator, as lm-eval does
        sep = tok.eot if tok.eot is not None else tok.bos
        if sep is None:
            raise ValueError("empty context and the tokenizer has neither eot nor bos to condition on")
        return [sep], whole
    return ctx, whole[len(ctx):]


@torch.no_grad()
def choice_logprobs(model, seqs, device, ctx):
    """Sum of log p(choice tokens | context) for each encoded (context, choice) pair; one right-padded batch,
    left-truncated to block_size, run under ctx (the autocast of --dtype). Causal attention: the padding after a
    row changes none of its log-probabilities."""
    T = model.config.block_size
    rows = [(ctx + cont)[-(T + 1):] for ctx, cont in seqs]
    L = max(len(r) for r in rows) - 1
    x = torch.zeros(len(rows), L, dtype=torch.long)
    y = torch.full((len(rows), L), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, :len(r) - 1], y[i, :len(r) - 1] = torch.tensor(r[:-1]), torch.tensor(r[1:])
    with ctx:
        logits, _ = model(x.to(device))
    logp = F.log_softmax(logits.float(), dim=-1).cpu()
    out = []
    for i, (r, (_, cont)) in enumerate(zip(rows, seqs)):
        k = min(len(cont), len(r) - 1)  # the choice's tokens are the last k targets of the row
        pos = torch.arange(len(r) - 1 - k, len(r) - 1)
        out.append(logp[i, pos, y[i, pos]].sum().item())
    return out


def cmd_mc(args):
    from tokenizer import get_tokenizer
    device, ctx = setup(args)
    model, meta = load_model(args.checkpoint, device)
    if meta is None:
        raise ValueError(f"{args.checkpoint} carries no tokenizer")
    tok = get_tokenizer(meta)
    if not os.path.isfile(args.file):
        raise FileNotFoundError(f"--file {args.file}: no such file")
    examples = []
    for lineno, line in enumerate(text_lines(args.file, '--file'), 1):
        if line.strip():
            try:
                ex = json.loads(line)
                choices = ex['choices']  # a string would be scored character by character
                ok = (isinstance(ex['context'], str) and isinstance(choices, list) and len(choices) >= 2
                      and all(isinstance(c, str) for c in choices) and 0 <= int(ex['label']) < len(choices))
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise ValueError(f"{args.file}:{lineno}: want {{\"context\": str, \"choices\": [>= 2 str], \"label\": index}}")
            try:  # encode up front, so a bad example fails before any scoring
                ex['seqs'] = [encode_pair(tok, ex['context'], c) for c in ex['choices']]
            except ValueError as e:
                raise ValueError(f"{args.file}:{lineno}: {e}") from None
            if any(not cont for _, cont in ex['seqs']):
                raise ValueError(f"{args.file}:{lineno}: a choice encodes to no tokens")
            examples.append(ex)
    if not examples:
        raise ValueError(f"{args.file}: no examples")
    examples = examples[:args.limit] if args.limit else examples
    seqs = [seq for ex in examples for seq in ex['seqs']]  # every (context, choice) pair, --batch_size per forward
    flat = []
    for i in tqdm(range(0, len(seqs), args.batch_size), desc='mc', leave=False):
        flat += choice_logprobs(model, seqs[i:i + args.batch_size], device, ctx)
    hits = hits_norm = 0
    preds = []
    for ex in examples:
        lp, flat = flat[:len(ex['seqs'])], flat[len(ex['seqs']):]
        norm = [s / max(1, len(c.encode('utf-8'))) for s, c in zip(lp, ex['choices'])]  # per byte of the choice
        pred, pred_norm = int(np.argmax(lp)), int(np.argmax(norm))
        hits += pred == int(ex['label'])
        hits_norm += pred_norm == int(ex['label'])
        preds.append({'logprobs': lp, 'pred': pred, 'pred_norm': pred_norm, 'label': int(ex['label'])})
    n = len(examples)
    res = {'checkpoint': args.checkpoint, 'file': args.file, 'n': n, 'acc': hits / n, 'acc_norm': hits_norm / n,
           'acc_stderr': math.sqrt(hits / n * (1 - hits / n) / n)}
    if args.json:
        print(json.dumps(res | {'predictions': preds}, indent=2))
    else:
        print(f"{args.checkpoint} on {args.file}: n={n}  acc {res['acc']:.4f} (±{res['acc_stderr']:.4f})  acc_norm {res['acc_norm']:.4f}")

# -----------------------------------------------------------------------------

def check_args(args):
    """The option validation layer: counts in range, and a sweep's outputs never an input or unwritable."""
    minimum = dict(batch_size=1, tokens=1, block_size=0, length=1, max_maps=1, plot_rows=1, limit=0)
    for k, lo in minimum.items():
        if getattr(args, k, lo) < lo:
            raise ValueError(f"--{k} must be >= {lo}, got {getattr(args, k)}")
    if args.cmd in ('ppl', 'sweep') and not getattr(args, 'from_csv', None) and not args.data:
        raise ValueError(f"{args.cmd} needs --data (a prepared data dir or a raw text file)")
    if args.cmd == 'sweep' and args.from_csv:
        if args.checkpoint:
            raise ValueError("--from_csv remakes the report from the CSV alone: no checkpoint")
    elif args.cmd == 'sweep':
        if not args.checkpoint:
            raise ValueError("sweep needs a checkpoint (or --from_csv FILE)")
        inputs = [args.checkpoint, args.data] + ([args.maps_file] if args.maps_file else [])
        for out in (args.out, os.path.splitext(args.out)[0] + '.png'):
            check_out_path(out, inputs)


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    run = argparse.ArgumentParser(add_help=False)  # options of the commands that run a model
    run.add_argument('--device', default='auto', help="auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps")
    run.add_argument('--dtype', default='auto', choices=['auto', 'float32', 'bfloat16', 'float16'], help="autocast dtype")
    run.add_argument('--batch_size', type=int, default=8)
    run.add_argument('--json', action='store_true', help="print JSON instead of the table")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument('--data', '--data_dir', help="prepared data dir, or a raw text file (required)")
    data.add_argument('--split', default='val', help="which .bin of a data dir (val, train)")
    data.add_argument('--block_size', type=int, default=0, help="window length (default: the checkpoints' smallest block_size)")

    s = sub.add_parser('ppl', parents=[run, data], help="loss / perplexity / bits-per-byte of checkpoints")
    s.add_argument('checkpoints', nargs='+')
    s.add_argument('--tokens', type=int, default=65536, help="token budget (the same tokens for every checkpoint)")

    s = sub.add_parser('sweep', parents=[run, data], help="perplexity of a checkpoint under many layer maps, no training")
    s.add_argument('checkpoint', nargs='?')
    s.add_argument('--from_csv', help="the summary and heatmap again from a sweep CSV alone (no model, no data)")
    s.add_argument('--maps', help="explicit maps: '0,1,2,3,0,1,2,3;0,1,1,1,2,2,2,3'")
    s.add_argument('--maps_file', help="one map per line (# comments)")
    s.add_argument('--generate', help="comma list of keep_ends (first/last fixed, middle free), monotone "
                                      "(first/last fixed, non-decreasing), any (no constraint: the control for "
                                      "keep_ends), methods (stack/interleave/dus/repeat)")
    s.add_argument('--length', type=int, default=8, help="length of generated maps")
    s.add_argument('--max_maps', type=int, default=200, help="keep_ends/monotone/any: more maps than this -> a seeded random sample")
    s.add_argument('--seed', type=int, default=0)
    s.add_argument('--tokens', type=int, default=16384)
    s.add_argument('--out', default='sweep.csv', help="CSV path; the heatmap goes beside it as .png")
    s.add_argument('--plot_rows', type=int, default=120, help="heatmap shows the best this many maps")

    s = sub.add_parser('compare', help="val loss vs FLOPs/tokens/time of runs over seeds; speedup of grown over scratch "
                                       "(compare.py; reads logs only)")
    add_compare_arguments(s)

    s = sub.add_parser('mc', parents=[run], help="multiple-choice accuracy from a JSONL of {context, choices, label}")
    s.add_argument('checkpoint')
    s.add_argument('--file', required=True)
    s.add_argument('--limit', type=int, default=0)

    args = p.parse_args(argv)
    try:
        check_args(args)
        {'ppl': cmd_ppl, 'sweep': cmd_sweep, 'compare': cmd_compare, 'mc': cmd_mc}[args.cmd](args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == '__main__':
    main()
