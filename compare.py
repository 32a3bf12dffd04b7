"""
Compare training runs from their logs (no model is loaded): val loss against compute, and the speedup of grown
runs over training from scratch, as mean ± sd over seeds.

  python compare.py runs/growth --losses 2.2,2.1,2.0 --csv results/growth.csv --out results/growth.png
  python compare.py scratch=out-grow/scratch stack=out-grow/stack lesa=out-grow/lesa --losses 2.2
  python compare.py --from_csv results/growth.csv

A run is [arm=]path, path an out_dir or its log.jsonl. Its arm is the label, else the out_dir's name, or for the
study layout <arm>/s<seed>/ the arm dir; its seed is that s<seed>, else the seed in the out_dir's config.json. A
study dir (holding <arm>/s<seed>/log.jsonl, as study.py writes them) stands for all its runs.

C(L) is the FLOPs at which a run's val loss first reaches L, interpolated between evals (grown runs' FLOPs include
the small model and any operator training). Every run is measured against the scratch run of the SAME seed (same
data order): sp = C_scratch(L) / C_run(L) - 1 ("Stacking Your Transformers", 2024, arXiv 2405.15319, App. B.2) at
the scratch run's final val loss L*, at its loss at fractions of its final FLOPs (--at) and at given losses. The
table gives mean ± sd over seeds and n per arm; seeds that never reach a target are counted, not dropped silently.
--csv writes the per-run summary that --from_csv turns into the same table without the logs.
"""
import argparse
import csv
import glob
import io
import json
import math
import os
import re
import sys

import numpy as np

from configurator import ArgumentParser, check_out_path

# -----------------------------------------------------------------------------
# output helpers (eval.py uses them too)

def atomic_write(path, write):
    """write(tmp_path) then rename: never a half-written output file, nor a temp file left behind."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.isfile(tmp):
            os.remove(tmp)
        raise


def pyplot():
    """matplotlib is optional: without it the CSV/JSON/table still come out."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib for plots)", file=sys.stderr)
        return None


def save_fig(fig, path, plt):
    atomic_write(path, lambda tmp: fig.savefig(tmp, format='png', dpi=110))
    plt.close(fig)

# -----------------------------------------------------------------------------
# reading logs

def split_label(arg):
    """'label=path' or 'path' -> (label or None, path); a '/' before the '=' means it is all path."""
    head, eq, tail = arg.partition('=')
    return (head, tail) if eq and '/' not in head else (None, arg)


def expand(args):
    """Run arguments with each study dir (no log.jsonl of its own) replaced by its <arm>/s<seed> out_dirs."""
    out = []
    for arg in args:
        label, path = split_label(arg)
        if label is None and os.path.isdir(path) and not os.path.exists(os.path.join(path, 'log.jsonl')):
            found = glob.glob(os.path.join(path, '*', 's*', 'log.jsonl'))
            found = [p for p in found if re.fullmatch(r's\d+', os.path.basename(os.path.dirname(p)))]
            if not found:
                raise FileNotFoundError(f"{path}: no log.jsonl, nor <arm>/s<seed>/log.jsonl below it")
            key = lambda p: (os.path.basename(os.path.dirname(os.path.dirname(p))), int(os.path.basename(os.path.dirname(p))[1:]))
            out += sorted(found, key=key)
        else:
            out.append(arg)
    return out


def run_identity(label, path):
    """-> (arm, seed or None) of the run whose log is at path (see the module docstring)."""
    if os.path.basename(path) != 'log.jsonl':  # a log file on its own: named after the file
        return label or os.path.splitext(os.path.basename(path))[0], None
    run_dir = os.path.dirname(os.path.abspath(path))
    m = re.fullmatch(r's(\d+)', os.path.basename(run_dir))
    if m:
        return label or os.path.basename(os.path.dirname(run_dir)), int(m[1])
    seed = None
    config = os.path.join(run_dir, 'config.json')
    if os.path.isfile(config):
        try:
            with open(config, encoding='utf-8') as f:
                seed = json.load(f).get('seed')
        except (ValueError, AttributeError) as e:
            raise ValueError(f"{config}: not a run's config.json ({type(e).__name__}: {str(e)[:200]})") from None
    return label or os.path.basename(run_dir), seed


def read_log(arg):
    """'[arm=]path' (a log.jsonl or the out_dir holding it) -> run dict: arm, seed, label, path, eval and grow records."""
    label, path = split_label(arg)
    if os.path.isdir(path):
        path = os.path.join(path, 'log.jsonl')
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such log")
    arm, seed = run_identity(label, path)
    evals, grows, model = [], [], {}  # an eval's stage: how many growths came before it in the file
    try:
        with open(path, encoding='utf-8') as f:
            lines = f.readlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a log.jsonl (not UTF-8 text)") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            kind = rec['type']
            if kind == 'eval':
                evals.append({k: float(rec[k]) for k in ('flops', 'tokens', 'elapsed', 'val_loss')} |
                             {'iter': int(rec['iter']), 'stage': len(grows)})
            elif kind == 'model':  # the sizes at the start and after each growth: the last one is the final model's
                model = {k: float(rec[k]) for k in MODEL_FIELDS if k in rec or k not in LATER_FIELDS}
            elif kind == 'grow':  # operator_flops (training a growth operator) is already inside flops
                grows.append({k: float(rec[k]) for k in ('flops', 'tokens')} | {'iter': int(rec['iter']),
                              'elapsed': float(rec.get('elapsed', 'nan')), 'operator_flops': float(rec.get('operator_flops', 0))})
        except (ValueError, KeyError, TypeError) as e:
            if not line.endswith('\n'):  # the last record, cut by a kill during the append (train.py's resume drops it too)
                print(f"note: {path}:{lineno}: skipped the half-written last record", file=sys.stderr)
                continue
            raise ValueError(f"{path}:{lineno}: malformed log record ({type(e).__name__}: {e})") from None
    if not evals:
        raise ValueError(f"{path}: no eval records (type 'eval' with val_loss)")
    evals.sort(key=lambda r: r['flops'])  # a resumed run may append out of order
    return {'arm': arm, 'seed': seed, 'label': arm if seed is None else f"{arm}/s{seed}", 'path': path,
            'evals': evals, 'grows': grows, 'model': model}

# -----------------------------------------------------------------------------
# per-run summary: FLOPs to each target and the speedup against the same seed's scratch run

def first_crossing(xs, losses, target):
    """Compute at which a curve first gets to loss <= target, linearly interpolated between the two eval points that
    bracket the crossing; None if it never does (no extrapolation). A curve already below at its first point: that point."""
    for i, (x, loss) in enumerate(zip(xs, losses)):
        if loss <= target:
            if i == 0:
                return x
            x0, l0 = xs[i - 1], losses[i - 1]
            return x0 + (l0 - target) / (l0 - loss) * (x - x0)
    return None


def target_keys(fractions, losses):
    """Column keys of the targets, in table order: given losses ('2.2'), scratch's loss at fractions of its final
    FLOPs ('0.5C'), and 'final' (its final val loss L*, fraction 1)."""
    return [f"{L:g}" for L in losses] + [f"{q:g}C" for q in fractions if q != 1] + ['final']


def target_losses(scratch, fractions, losses):
    """{key: target val loss} for the seed whose scratch run this is; None for a fraction before its first eval."""
    xs, ls = [e['flops'] for e in scratch['evals']], [e['val_loss'] for e in scratch['evals']]
    out = {f"{L:g}": L for L in losses}
    for q in fractions:
        if q != 1:
            out[f"{q:g}C"] = float(np.interp(q * xs[-1], xs, ls)) if xs[0] <= q * xs[-1] else None
    out['final'] = ls[-1]
    return out


def speedup(c_scratch, c):
    return c_scratch / c - 1 if c and c_scratch is not None else None


def first_of_final_model(run):
    """The final model's first eval: right after its last growth (or an imported model's start), before training."""
    stage = run['evals'][-1]['stage']
    return next(e for e in run['evals'] if e['stage'] == stage)  # evals are in FLOPs order, ties in file order


def summarize(runs, scratch_arm, fractions, losses):
    """One summary row per run: its final numbers and, per target, the target loss, C and sp against the scratch
    run of its seed (empty without one)."""
    scratch_of = {r['seed']: r for r in runs if r['arm'] == scratch_arm}
    keys = target_keys(fractions, losses)
    rows = []
    for run in runs:
        last, partner = run['evals'][-1], scratch_of.get(run['seed'])
        targets = target_losses(partner, fractions, losses) if partner else dict.fromkeys(keys)
        xs, ls = [e['flops'] for e in run['evals']], [e['val_loss'] for e in run['evals']]
        row = {'arm': run['arm'], 'seed': run['seed'], 'scratch_arm': scratch_arm, 'final_flops': last['flops'],
               'final_val_loss': last['val_loss'], 'tokens': last['tokens'], 'elapsed': last['elapsed'],
               'growth_iters': ' '.join(str(g['iter']) for g in run['grows']),
               'operator_flops': sum((g['operator_flops'] for g in run['grows']), 0.0),
               'first_val_loss': first_of_final_model(run)['val_loss'], **{k: run['model'].get(k) for k in MODEL_FIELDS}}
        for k in keys:
            L = targets[k]
            row[f'loss@{k}'] = L
            row[f'flops@{k}'] = None if L is None else first_crossing(xs, ls, L)
        rows.append(row)
    for row in rows:  # sp from the C columns alone, as table() does from a CSV
        partner = next((r for r in rows if r['arm'] == scratch_arm and r['seed'] == row['seed']), None)
        for k in keys:
            row[f'sp@{k}'] = speedup(partner[f'flops@{k}'], row[f'flops@{k}']) if partner else None
    return rows


def stats(values):
    """n, mean and sample standard deviation (None below 2 values)."""
    n = len(values)
    return {'n': n, 'mean': float(np.mean(values)) if n else None, 'sd': float(np.std(values, ddof=1)) if n > 1 else None}


def arm_order(rows, scratch_arm):
    return [scratch_arm] + [a for a in dict.fromkeys(r['arm'] for r in rows) if a != scratch_arm]


def table(rows, keys):
    """Per target: the scratch runs' target loss and C, and per other arm the statistics of sp over its seeds with
    the seeds that give no sp counted by reason; last, every arm's final val loss."""
    scratch_arm = rows[0]['scratch_arm']
    arms = arm_order(rows, scratch_arm)
    scratch_of = {r['seed']: r for r in rows if r['arm'] == scratch_arm}
    out = []
    for k in keys:
        sc = list(scratch_of.values())
        line = {'target': k, 'loss': stats([r[f'loss@{k}'] for r in sc if r[f'loss@{k}'] is not None]),
                'scratch_flops': stats([r[f'flops@{k}'] for r in sc if r[f'flops@{k}'] is not None]) | {
                    'never': sum(r[f'flops@{k}'] is None for r in sc)}, 'speedup': {}}
        for arm in arms[1:]:
            sp, why = [], {'never': 0, 'scratch_never': 0, 'no_scratch': 0}
            for r in rows:
                if r['arm'] != arm:
                    continue
                partner = scratch_of.get(r['seed'])
                if partner is None:
                    why['no_scratch'] += 1
                elif partner[f'flops@{k}'] is None:
                    why['scratch_never'] += 1
                elif r[f'flops@{k}'] is None:
                    why['never'] += 1
                else:
                    sp.append(speedup(partner[f'flops@{k}'], r[f'flops@{k}']))
            line['speedup'][arm] = stats(sp) | why
        out.append(line)
    final = {arm: stats([r['final_val_loss'] for r in rows if r['arm'] == arm]) for arm in arms}
    return out, final


def target_name(k):
    return 'final L*' if k == 'final' else f"scratch's loss at {k[:-1]} C" if k.endswith('C') else k


FORMATS = {'sp': (lambda v: f"{v:+.1%}", lambda v: f"{v:.1%}"), 'flops': (lambda v: f"{v:.3e}", lambda v: f"{v:.1e}"),
           'loss': (lambda v: f"{v:.4f}", lambda v: f"{v:.4f}"), 'dloss': (lambda v: f"{v:+.4f}", lambda v: f"{v:.4f}"),
           'params': (lambda v: f"{v:,.0f}", lambda v: f"{v:,.0f}")}


def cell(st, kind, notes=()):
    """'mean ± sd (n=.., notes)', a lone value without ±, '-' when no seed gives a value (the notes say why)."""
    fmt, sd_fmt = FORMATS[kind]
    value = '-' if not st['n'] else fmt(st['mean']) + ('' if st['sd'] is None else f" ± {sd_fmt(st['sd'])}")
    return f"{value} (" + '; '.join([f"n={st['n']}", *notes]) + ")"


def notes_of(st):
    words = {'never': "never reach{}", 'scratch_never': "scratch never reach{}", 'no_scratch': "without a scratch run"}
    return [f"{st[k]} " + w.format('es' if st[k] == 1 else '') for k, w in words.items() if st.get(k)]


def print_table(rows, lines, final):
    """One row per arm (many arms stay readable): the scratch arm's C and every other arm's sp at each target, and
    the final val loss."""
    scratch_arm = rows[0]['scratch_arm']
    arms = arm_order(rows, scratch_arm)
    seeds = sorted({r['seed'] for r in rows}, key=lambda s: (s is None, s))
    print(f"FLOPs C to first reach each val loss, interpolated between evals; per seed sp = C_scratch / C_run - 1 against "
          f"the scratch run of that seed; mean ± sd over seeds (n = seeds averaged); scratch = {scratch_arm}; "
          f"seeds {', '.join(map(str, seeds))}\n")
    def head(line):  # a given loss is the same for every seed: no ± 0
        loss = line['loss']
        value = '-' if not loss['n'] else f"{loss['mean']:.4f}" + ('' if not loss['sd'] else f" ± {loss['sd']:.4f}")
        return f"{target_name(line['target'])} ({value})" if line['target'] == 'final' or line['target'].endswith('C') else value
    print("| arm | " + " | ".join(f"at {head(line)}" for line in lines) + " | final val loss |")
    print("|---|" + "---:|" * (len(lines) + 1))
    print(f"| {scratch_arm} (C) | " + " | ".join(cell(line['scratch_flops'], 'flops', notes_of(line['scratch_flops']))
                                               for line in lines) + f" | {cell(final[scratch_arm], 'loss')} |")
    for arm in arms[1:]:
        print(f"| {arm} (sp) | " + " | ".join(cell(line['speedup'][arm], 'sp', notes_of(line['speedup'][arm])) for line in lines)
              + f" | {cell(final[arm], 'loss')} |")

def print_models(rows):
    """Per arm, when the runs logged their sizes (train.py's model record): logical layers, stored, logical and
    trainable parameters, the memory a batch-1 sampler holds at full context, and the final model's val loss right
    after it was made (growth or import) and at the end, with its perplexity."""
    arms = [a for a in arm_order(rows, rows[0]['scratch_arm']) if any(r['arm'] == a and r['params_unique'] is not None for r in rows)]
    if not arms:
        return
    same = lambda vals, fmt: fmt(vals[0]) if len(set(vals)) == 1 else ' / '.join(map(fmt, sorted(set(vals))))
    print("\nSizes of each arm's final model; losses mean ± sd over seeds (n); ppl = exp(val loss)\n")
    print("| arm | logical layers | stored params | logical params | trainable params | sampling memory (fp32, full context) "
          "| val loss at start | final val loss | final ppl |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arm in arms:
        mine = [r for r in rows if r['arm'] == arm and r['params_unique'] is not None]
        sizes = [same([r[k] for r in mine], lambda v: f"{v:,.0f}") for k in MODEL_FIELDS[:4]]
        memory = same([r['sampling_bytes_fp32'] for r in mine], lambda v: f"{v / 2**20:.2f} MiB")
        losses = [cell(stats([r[k] for r in mine]), 'loss') for k in ('first_val_loss', 'final_val_loss')]
        ppl = cell(stats([math.exp(r['final_val_loss']) for r in mine]), 'loss')
        print(f"| {arm} | " + " | ".join(sizes + [memory] + losses + [ppl]) + " |")

# -----------------------------------------------------------------------------
# the summary CSV

MODEL_FIELDS = ['n_logical', 'params_unique', 'params_logical', 'params_trainable', 'sampling_bytes_fp32',
                'params_logical_non_embedding']  # train.py's model record
LATER_FIELDS = ['params_logical_non_embedding']  # absent from summaries written before it was added: read as empty
FIELDS = ['arm', 'seed', 'scratch_arm', 'final_flops', 'final_val_loss', 'tokens', 'elapsed', 'growth_iters', 'operator_flops',
          'first_val_loss', *MODEL_FIELDS]


def csv_cell(v):
    """repr for floats (they round-trip exactly, so the CSVs give the very same table), '' for None."""
    return '' if v is None else repr(v) if isinstance(v, float) else v


def write_csv(path, rows, keys):
    fields = FIELDS + [f"{c}@{k}" for k in keys for c in ('loss', 'flops', 'sp')]
    def write(tmp):
        with open(tmp, 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(fields)
            for r in rows:
                w.writerow([csv_cell(r[c]) for c in fields])
    atomic_write(path, write)


def read_records(path, what):
    """A CSV file -> (its columns, [(line number, record)]); a file that is not UTF-8 CSV text or whose rows are cut
    (a missing last line end, fewer or more values than columns) is a ValueError naming the file."""
    try:
        with open(path, newline='', encoding='utf-8') as f:
            text = f.read()
        reader = csv.DictReader(io.StringIO(text, newline=''))
        columns, records = reader.fieldnames or [], []
        for rec in reader:
            if None in rec or None in rec.values():
                raise ValueError(f"{path}:{reader.line_num}: not as many values as the {len(columns)} columns "
                                 f"(a cut or damaged row)")
            records.append((reader.line_num, rec))
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a {what} ({type(e).__name__}: {e})") from None
    if text and not text.endswith('\n'):
        raise ValueError(f"{path}: its last line is cut (no line end): not a complete {what}")
    return columns, records


def read_csv(path):
    """A summary CSV -> (rows, target keys)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--from_csv {path}: no such file")
    fields, records = read_records(path, 'compare summary CSV')
    keys = [c[len('flops@'):] for c in fields if c.startswith('flops@')]
    missing = [c for c in FIELDS + [f"{c}@{k}" for k in keys or ['final'] for c in ('loss', 'flops', 'sp')]
               if c not in fields and c not in LATER_FIELDS]
    if missing:
        raise ValueError(f"{path}: not a compare summary CSV (no column {missing[0]!r})")
    rows = []
    for lineno, rec in records:
        try:
            num = lambda c: float(rec[c]) if rec[c] else None
            rows.append({'arm': rec['arm'], 'seed': int(rec['seed']) if rec['seed'] else None,
                         'scratch_arm': rec['scratch_arm'], 'growth_iters': rec['growth_iters'], **dict.fromkeys(LATER_FIELDS),
                         **{c: num(c) for c in fields if c not in ('arm', 'seed', 'scratch_arm', 'growth_iters')}})
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}:{lineno}: bad value ({e})") from None
    if 'final' not in keys:
        raise ValueError(f"{path}: not a compare summary CSV (no column 'flops@final')")
    if not rows:
        raise ValueError(f"{path}: no runs")
    if len({r['scratch_arm'] for r in rows}) > 1:
        raise ValueError(f"{path}: rows disagree on scratch_arm")
    return rows, keys

CURVE_FIELDS = ['arm', 'seed', 'type', 'iter', 'flops', 'tokens', 'elapsed', 'val_loss', 'operator_flops']


def curves_path(csv_path):
    """The curves CSV beside a summary CSV: results/growth.csv -> results/growth.curves.csv."""
    return os.path.splitext(csv_path)[0] + '.curves.csv'


def write_curves(path, runs):
    """Every run's eval and growth records, for the plot without the logs (and for study.py: runs of an earlier
    session). Grow records come before the evals at their FLOPs, as in the log."""
    def write(tmp):
        with open(tmp, 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow(CURVE_FIELDS)
            for r in runs:
                records = [dict(g, type='grow', val_loss=None, order=(j, g['flops'], 1)) for j, g in enumerate(r['grows'])]
                records += [dict(e, type='eval', operator_flops=None, order=(e['stage'], e['flops'], 0)) for e in r['evals']]
                for x in sorted(records, key=lambda x: x['order']):  # growth j after the evals before it
                    w.writerow([r['arm'], '' if r['seed'] is None else r['seed']] + [
                        csv_cell(x[c]) for c in CURVE_FIELDS[2:]])
    atomic_write(path, write)


def read_curves(path):
    """A curves CSV -> runs as read_log gives them (without their model records: those are in the summary)."""
    runs = {}
    columns, records = read_records(path, 'compare curves CSV')
    if columns != CURVE_FIELDS:
        raise ValueError(f"{path}: not a compare curves CSV (columns {', '.join(CURVE_FIELDS)})")
    for lineno, rec in records:
        try:
            seed = int(rec['seed']) if rec['seed'] else None
            run = runs.setdefault((rec['arm'], seed), {'arm': rec['arm'], 'seed': seed, 'path': path, 'evals': [],
                                                       'grows': [], 'model': {}})
            point = {k: float(rec[k]) for k in ('flops', 'tokens', 'elapsed')} | {'iter': int(rec['iter'])}
            if rec['type'] == 'eval':
                run['evals'].append(point | {'val_loss': float(rec['val_loss']), 'stage': len(run['grows'])})
            elif rec['type'] == 'grow':
                run['grows'].append(point | {'operator_flops': float(rec['operator_flops'])})
            else:
                raise ValueError(f"type {rec['type']!r}")
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}:{lineno}: bad value ({e})") from None
    for run in runs.values():
        run['label'] = run['arm'] if run['seed'] is None else f"{run['arm']}/s{run['seed']}"
        if not run['evals']:
            raise ValueError(f"{path}: {run['label']} has no eval records")
    return list(runs.values())

# -----------------------------------------------------------------------------
# plot

def band(curves, points=200):
    """Seeds' curves [(xs, ys)] on a common grid over the x range all of them cover -> (grid, mean, min, max),
    or None if they share no range."""
    lo, hi = max(xs[0] for xs, _ in curves), min(xs[-1] for xs, _ in curves)
    if not lo < hi:
        return None
    grid = np.linspace(lo, hi, points)
    ys = np.array([np.interp(grid, xs, ls) for xs, ls in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def plot_compare(runs, rows, lines, path, plt):
    """Val loss against FLOPs, tokens and wall time, per arm the mean over seeds and a min-max band (the legend
    gives sp at L*); when the runs logged their sizes, also each arm's final val loss against its stored params."""
    scratch_arm = rows[0]['scratch_arm']
    axes_spec = [('flops', 'FLOPs (incl. the small model for grown runs)'), ('tokens', 'tokens'), ('elapsed', 'wall time (s)')]
    sized = len({r['params_unique'] for r in rows} - {None}) > 1
    fig, axes = plt.subplots(1, 4 if sized else 3, figsize=(21 if sized else 16, 5.5), sharey=True)
    arms = arm_order(runs, scratch_arm)
    style = lambda i: dict(color=plt.cm.tab20(i % 20), ls='-' if i < 20 else '--')  # 20 colours, then dashed
    final = next(line for line in lines if line['target'] == 'final')
    for ax, (key, xlabel) in zip(axes, axes_spec):
        for i, arm in enumerate(arms):
            mine = [r for r in runs if r['arm'] == arm]
            curves = [tuple(map(list, zip(*sorted((e[key], e['val_loss']) for e in r['evals'])))) for r in mine]
            shared = band(curves) if len(curves) > 1 else None
            sp = '' if arm == scratch_arm else ', sp ' + cell(final['speedup'][arm], 'sp').split(' (')[0]
            label = f"{arm} (n={len(mine)}{sp})"
            if shared:
                grid, mean, low, high = shared
                ax.plot(grid, mean, label=label, **style(i))
                ax.fill_between(grid, low, high, color=style(i)['color'], alpha=0.15, lw=0)
            else:
                for j, (xs, ls) in enumerate(curves):
                    ax.plot(xs, ls, marker='.', label=label if j == 0 else None, **style(i))
            for x in sorted({g[key] for r in mine for g in r['grows'] if not math.isnan(g[key])}):
                ax.axvline(x, color=style(i)['color'], ls=':', lw=1)
        if final['loss']['n']:
            ax.axhline(final['loss']['mean'], color='gray', ls='--', lw=0.8)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    early = [r['evals'][1]['val_loss'] for r in runs if r['arm'] == scratch_arm and len(r['evals']) > 1]
    if early:  # the first eval (an untrained model) would squash the rest; every run's end stays in view
        top = max(early + [r['evals'][-1]['val_loss'] for r in runs]) + 0.02
        axes[0].set_ylim(top=top, bottom=min(e['val_loss'] for r in runs for e in r['evals']) - 0.02)
    if sized:
        from matplotlib.ticker import EngFormatter
        ax = axes[3]
        for i, arm in enumerate(arms):
            mine = [r for r in rows if r['arm'] == arm and r['params_unique'] is not None]
            if mine:
                loss = stats([r['final_val_loss'] for r in mine])
                ax.errorbar(mine[0]['params_unique'], loss['mean'], yerr=loss['sd'] or 0, fmt='o', capsize=3, color=style(i)['color'])
                ax.annotate(arm, (mine[0]['params_unique'], loss['mean']), fontsize=7, xytext=(3, 3), textcoords='offset points')
        ax.set_xlabel('stored (unique) parameters')
        ax.xaxis.set_major_formatter(EngFormatter())  # 300k, not 300000 running into its neighbours
        ax.grid(alpha=0.3)
    axes[0].set_ylabel('val loss')
    fig.legend(*axes[0].get_legend_handles_labels(), loc='lower center', ncol=min(len(arms), 5), fontsize=8,
               title=f"line: mean over seeds, band: min-max; dotted: growth; dashed: {scratch_arm}'s mean L*; "
                     f"sp = C_{scratch_arm}/C_run - 1 at L*, same seed", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(len(arms) / 5), 1, 1))
    save_fig(fig, path, plt)

# -----------------------------------------------------------------------------

def pick_scratch(arms, wanted):
    """The scratch arm: --scratch (an arm or its index), else 'scratch' if there is one, else the first arm."""
    if wanted is None:
        return 'scratch' if 'scratch' in arms else arms[0]
    if wanted.isdigit():
        if int(wanted) >= len(arms):
            raise ValueError(f"--scratch {wanted}: only {len(arms)} arms")
        return arms[int(wanted)]
    if wanted not in arms:
        raise ValueError(f"--scratch {wanted!r} is neither an arm index nor one of {arms}")
    return wanted


def only_arms(rows, runs, wanted):
    """The rows (and runs) of the wanted arms, with the scratch arm they are measured against."""
    if not wanted:
        return rows, runs
    arms = [a.strip() for a in wanted.split(',') if a.strip()]
    known = list(dict.fromkeys(r['arm'] for r in rows))
    unknown = [a for a in arms if a not in known]
    if unknown:
        raise ValueError(f"--arms: no arm {unknown[0]!r} (the arms: {', '.join(known)})")
    order = {a: i for i, a in enumerate([rows[0]['scratch_arm']] + arms)}  # the table in the order asked for
    pick = lambda items: sorted((r for r in items if r['arm'] in order), key=lambda r: order[r['arm']])
    return pick(rows), runs and pick(runs)


def check_outputs(outputs, inputs):
    """Before any work: no output over an input (a run's log, a CSV read), onto a directory or below a file
    (every script's rule), and no two outputs the same file."""
    outputs = [o for o in outputs if o]
    for out in outputs:
        check_out_path(out, inputs)
    same = [o for i, o in enumerate(outputs) if os.path.abspath(o) in map(os.path.abspath, outputs[:i])]
    if same:
        raise ValueError(f"{same[0]} is given as two outputs (the plot and a CSV)")


def cmd_compare(args):
    if args.from_csv:
        if args.logs or args.csv:
            raise ValueError("--from_csv makes the table from the CSV alone: no logs, no --csv")
        check_outputs([args.out or os.path.splitext(args.from_csv)[0] + '.png'],
                      [p for p in (args.from_csv, curves_path(args.from_csv)) if os.path.exists(p)])
        rows, keys = read_csv(args.from_csv)
        if args.scratch is not None and args.scratch != rows[0]['scratch_arm']:
            raise ValueError(f"{args.from_csv}: its speedups are against {rows[0]['scratch_arm']!r}, not {args.scratch!r}")
        curves = curves_path(args.from_csv)
        runs = read_curves(curves) if os.path.isfile(curves) else None
        if runs is not None and {(r['arm'], r['seed']) for r in runs} != {(r['arm'], r['seed']) for r in rows}:
            raise ValueError(f"{curves} and {args.from_csv} list different runs")
        rows, runs = only_arms(rows, runs, args.arms)
        report(rows, keys, runs, png=args.out or os.path.splitext(args.from_csv)[0] + '.png', as_json=args.json)
        return
    if not args.logs:
        raise ValueError("give runs ([arm=]out_dir, log.jsonl or a study dir) or --from_csv")
    logs = expand(args.logs)
    run_dirs = [os.path.dirname(p) if os.path.basename(p) == 'log.jsonl' else p for p in (split_label(a)[1] for a in logs)]
    check_outputs([args.out or 'compare.png', args.csv, args.csv and curves_path(args.csv)],
                  [d for d in run_dirs if os.path.exists(d)])  # a run's log and config.json (run_identity reads it)
    runs = [read_log(a) for a in logs]
    seen = {}
    for r in runs:
        if (r['arm'], r['seed']) in seen:
            raise ValueError(f"{seen[r['arm'], r['seed']]} and {r['path']} are both {r['label']}; name them arm=path")
        seen[r['arm'], r['seed']] = r['path']
    try:
        fractions = [float(q) for q in args.at.split(',') if q.strip()]
        losses = [float(x) for x in args.losses.split(',') if x.strip()] if args.losses else []
    except ValueError:
        raise ValueError("--at and --losses take comma-separated numbers") from None
    if any(not 0 < q <= 1 for q in fractions):
        raise ValueError("--at takes fractions in (0, 1]")
    fractions = sorted(set(fractions) | {1.0})  # the final L* is always reported
    scratch_arm = pick_scratch(list(dict.fromkeys(r['arm'] for r in runs)), args.scratch)
    rows, keys = summarize(runs, scratch_arm, fractions, losses), target_keys(fractions, losses)
    rows, runs = only_arms(rows, runs, args.arms)
    report(rows, keys, runs, csv_path=args.csv, png=args.out or 'compare.png', as_json=args.json)


def report(rows, keys, runs=None, csv_path=None, png=None, as_json=False):
    """Print the tables (or JSON) of the summary rows; write the summary and curves CSVs (csv_path) and, with the
    runs' curves, the plot (png)."""
    lines, final = table(rows, keys)
    if csv_path:
        write_csv(csv_path, rows, keys)
        write_curves(curves_path(csv_path), runs)
    if as_json:
        print(json.dumps({'scratch': rows[0]['scratch_arm'], 'targets': keys, 'table': lines, 'final_val_loss': final,
                          'runs': rows}, indent=2))
    else:
        print_table(rows, lines, final)
        print_models(rows)
        if csv_path:
            print(f"\nwrote {csv_path} and {curves_path(csv_path)}")
    plt = pyplot() if runs and png else None
    if plt:
        plot_compare(runs, rows, lines, png, plt)
        if not as_json:
            print(f"wrote {png}")


def add_arguments(p):
    p.add_argument('logs', nargs='*', help="[arm=]out_dir, [arm=]log.jsonl or a study dir (<arm>/s<seed>/log.jsonl)")
    p.add_argument('--scratch', help="the scratch arm (name or index); default 'scratch' if present, else the first")
    p.add_argument('--at', default='0.25,0.5,0.75,1', help="targets: scratch's loss at these fractions of its final FLOPs")
    p.add_argument('--losses', help="extra target val losses, comma-separated")
    p.add_argument('--out', help="the plot; default compare.png, with --from_csv X.csv: X.png (from X.curves.csv)")
    p.add_argument('--csv', help="write the per-run summary CSV (arm, seed, FLOPs and sp at each target, ...)")
    p.add_argument('--from_csv', help="the table from a summary CSV alone, no logs")
    p.add_argument('--arms', help="only these arms (comma-separated; the scratch arm stays), e.g. for a table per group")
    p.add_argument('--json', action='store_true', help="print JSON instead of the table")


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        cmd_compare(args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == '__main__':
    main()
