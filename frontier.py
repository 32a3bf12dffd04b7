"""
Growth judged against the compute-optimal frontier, from a study's committed CSVs alone (no logs, no models).

  python frontier.py results/frontier.csv                  # the frontier, growth against it, two figures
  python frontier.py results/frontier.csv --budget 2e12    # what to train with that much compute

The frontier is built from isoFLOP profiles ("Training Compute-Optimal Large Language Models", Hoffmann et al. 2022,
arXiv 2203.15556, approach 2): at each FLOP budget C several sizes N are trained from scratch for C FLOPs each; per
seed a parabola in log N through their final val losses gives the optimal size N_opt(C) and the frontier loss
L_front(C). Between budgets L_front is interpolated linearly in log C (beyond the measured budgets it is
extrapolated from the nearest segment, and such numbers are marked with ~).

Arms are named c<budget>_<rest> (the study's naming, e.g. c1.6e12_L8): an arm with no growth step is a scratch size
of the frontier, any other arm a growth recipe <rest> run at that budget. A growth run is compared with the frontier
of its own seed (same data order, same eval batches):
  dL        = L_growth(C) - L_front(C)      its final val loss against the frontier at the FLOPs it spent
  sp_front  = C_front(L) / C_growth(L) - 1  at L = L_front(C) of its budget: FLOPs the frontier needs / FLOPs the
              growth run needed to first reach that loss (interpolated between its evals); a seed that never gets there
              is counted as 'never' in the cell, never dropped
  sp_equiv  = C_front(L_growth(C)) / C - 1  the compute the frontier would need for the growth run's final loss
Both speedups are in FLOPs ("Stacking Your Transformers", 2024, arXiv 2405.15319, App. B.2 defines sp against one
fixed target; here the target is the best-sized scratch model at each compute).
"""
import argparse
import math
import os
import re
import sys

import numpy as np

from compare import cell, curves_path, first_crossing, pyplot, read_csv, read_curves, save_fig, stats

ARM = re.compile(r'c(\d+(?:\.\d+)?e\d+)_(.+)')  # c<budget>_<rest>
SCRATCH = re.compile(r'L\d+(w\d+)?')  # a scratch size of the frontier: L<layers>[w<width>]


def split_arm(arm):
    """'c1.6e12_L8' -> (1.6e12, 'L8'); ValueError for a name outside the scheme."""
    m = ARM.fullmatch(arm)
    if not m:
        raise ValueError(f"arm {arm!r} is not named c<budget>_<name> (e.g. c1.6e12_L8, c1.6e12_stack)")
    return float(m.group(1)), m.group(2)


def parabola_min(log_n, losses):
    """(log N at the minimum, loss there, interior?) of the least-squares parabola through the points. Not interior
    when the parabola opens downwards or its vertex lies outside the sizes measured: then the best measured point."""
    a, b, c = np.polyfit(log_n, losses, 2)
    x = -b / (2 * a) if a > 0 else None
    if x is None or not min(log_n) < x < max(log_n):
        i = int(np.argmin(losses))
        return log_n[i], losses[i], False
    return x, c - b * b / (4 * a), True


def fit_frontier(rows):
    """The scratch rows -> {budget: {'sizes': {N: [rows]}, 'seeds': {seed: (log N_opt, L_front, interior)},
    'mean': (log N_opt, L_front, interior) of the per-size means}}."""
    budgets = {}
    for r in rows:
        budget, rest = split_arm(r['arm'])
        if r['growth_iters'] or not SCRATCH.fullmatch(rest):
            continue
        if r['params_logical_non_embedding'] is None:
            raise ValueError(f"{r['arm']}/s{r['seed']}: no params_logical_non_embedding (a CSV from an older compare.py)")
        budgets.setdefault(budget, {}).setdefault(r['params_logical_non_embedding'], []).append(r)
    out = {}
    for budget, sizes in sorted(budgets.items()):
        if len(sizes) < 3:
            raise ValueError(f"budget {budget:g}: {len(sizes)} scratch sizes; a parabola needs at least 3")
        ns = sorted(sizes)
        seeds = sorted({r['seed'] for rs in sizes.values() for r in rs})
        per_seed = {}
        for s in seeds:
            pts = [(math.log(n), r['final_val_loss']) for n in ns for r in sizes[n] if r['seed'] == s]
            if len(pts) == len(ns):  # a seed with a size missing gets no frontier point of its own
                per_seed[s] = parabola_min([p[0] for p in pts], [p[1] for p in pts])
        means = [float(np.mean([r['final_val_loss'] for r in sizes[n]])) for n in ns]
        out[budget] = {'sizes': {n: sizes[n] for n in ns}, 'seeds': per_seed,
                       'mean': parabola_min([math.log(n) for n in ns], means)}
    if len(out) < 2:
        raise ValueError(f"{len(out)} budget(s) with scratch sizes; the frontier needs at least 2")
    return out


def frontier_points(front, seed=None):
    """[(log C, L_front)] over the budgets, for one seed or (None) the per-size means."""
    return [(math.log(b), (f['mean'] if seed is None else f['seeds'][seed])[1]) for b, f in front.items()
            if seed is None or seed in f['seeds']]


def loss_at(points, log_c):
    """L_front at log C: linear between budgets, extrapolated from the end segments -> (loss, extrapolated?)."""
    xs, ys = zip(*points)
    i = min(max(np.searchsorted(xs, log_c) - 1, 0), len(xs) - 2)
    t = (log_c - xs[i]) / (xs[i + 1] - xs[i])
    return ys[i] + t * (ys[i + 1] - ys[i]), not xs[0] <= log_c <= xs[-1]


def compute_for(points, loss):
    """C_front(L): the FLOPs at which the frontier reaches `loss` (inverse of loss_at; the first segment that
    brackets it, else extrapolated from the end segment on its side) -> (C, extrapolated?), or (None, True) if the
    frontier does not fall with compute there."""
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if min(y0, y1) <= loss <= max(y0, y1) and y0 != y1:
            return math.exp(x0 + (loss - y0) / (y1 - y0) * (x1 - x0)), False
    (x0, y0), (x1, y1) = points[:2] if loss > points[0][1] else points[-2:]
    if not y1 < y0:
        return None, True
    return math.exp(x0 + (loss - y0) / (y1 - y0) * (x1 - x0)), True


def growth_rows(rows, runs, front):
    """Per growth run: its budget, recipe and the three comparisons with its seed's frontier."""
    curves = {(r['arm'], r['seed']): r for r in runs or []}
    out = []
    for r in rows:
        budget, recipe = split_arm(r['arm'])
        if not r['growth_iters'] and SCRATCH.fullmatch(recipe):
            continue
        points = frontier_points(front, r['seed']) if all(r['seed'] in f['seeds'] for f in front.values()) else None
        same = [s for s in front.get(budget, {}).get('sizes', {}).get(r['params_logical_non_embedding'], [])
                if s['seed'] == r['seed']]  # the scratch run of the final model's size, same budget and seed
        row = {'arm': r['arm'], 'budget': budget, 'recipe': recipe, 'seed': r['seed'], 'loss': r['final_val_loss'],
               'flops': r['final_flops'], 'n_logical': r['n_logical'], 'params': r['params_logical_non_embedding'],
               'dL': None, 'sp_front': None, 'sp_equiv': None, 'never': False, 'extrapolated': False,
               'dL_size': r['final_val_loss'] - same[0]['final_val_loss'] if same else None}
        if points is None:  # no frontier for this seed: the cells count it
            out.append(row)
            continue
        target, extra_t = loss_at(points, math.log(budget))
        row['dL'] = r['final_val_loss'] - loss_at(points, math.log(r['final_flops']))[0]
        c_equiv, extra_e = compute_for(points, r['final_val_loss'])
        row['sp_equiv'] = None if c_equiv is None else c_equiv / r['final_flops'] - 1
        row['extrapolated'] = extra_t or extra_e
        run = curves.get((r['arm'], r['seed']))
        if run is not None:
            c_growth = first_crossing([e['flops'] for e in run['evals']], [e['val_loss'] for e in run['evals']], target)
            row['never'] = c_growth is None
            row['sp_front'] = None if c_growth is None else budget / c_growth - 1
        out.append(row)
    return out


def describe(values, kind, never=0, missing=0):
    notes = [f"{never} never reach{'es' if never == 1 else ''}"] * bool(never) + [f"{missing} without a frontier"] * bool(missing)
    return cell(stats(values), kind, notes)


def print_frontier(front, train_tokens=None):
    print("## The frontier: scratch models at each FLOP budget (final val loss, mean ± sd over seeds, n)\n")
    for budget, f in front.items():
        print(f"### C = {budget:.3g} FLOPs\n")
        print("| size (arm) | params (non-embedding) | tokens | tokens/param |" + (" epochs |" if train_tokens else "")
              + " final val loss |")
        print("|---:|---:|---:|---:|" + ("---:|" if train_tokens else "") + "---:|")
        for n, rs in f['sizes'].items():
            tokens = float(np.mean([r['tokens'] for r in rs]))
            print(f"| {split_arm(rs[0]['arm'])[1]} | {n:,.0f} | {tokens:,.0f} | {tokens / n:,.0f} |"
                  + (f" {tokens / train_tokens:.2f} |" if train_tokens else "")
                  + f" {cell(stats([r['final_val_loss'] for r in rs]), 'loss')} |")
        seeds = f['seeds'].values()
        edge = sum(not s[2] for s in seeds)
        x, loss, interior = f['mean']
        print(f"\nparabola in log N, per seed: N_opt {describe([math.exp(s[0]) for s in seeds], 'params')}, L_front "
              f"{describe([s[1] for s in seeds], 'loss')}" + (f"; {edge} seed(s) with the optimum at an edge" if edge else "")
              + f"\non the means: N_opt {math.exp(x):,.0f}, L_front {loss:.4f} ({'interior' if interior else 'AT AN EDGE'})\n")


def print_growth(grown):
    recipes = list(dict.fromkeys(g['recipe'] for g in grown))
    budgets = sorted({g['budget'] for g in grown})
    print("## Growth against the frontier (mean ± sd over seeds, n; each seed against its own seed's frontier)\n")
    print("dL = L_growth(C) - L_front(C); sp_front = C_front(L)/C_growth(L) - 1 at L = L_front(budget); "
          "sp_equiv = C_front(L_growth)/C - 1; ~ = the frontier extrapolated beyond the measured budgets; "
          "vs same size = L_growth - the final loss of the scratch run of the grown model's size at that budget\n")
    print("| recipe | " + " | ".join(f"C = {b:.3g}: final loss | dL | sp_front | sp_equiv | vs same size" for b in budgets) + " |")
    print("|---|" + "---:|" * (5 * len(budgets)))
    for recipe in recipes:
        cells = []
        for b in budgets:
            mine = [g for g in grown if g['recipe'] == recipe and g['budget'] == b]
            if not mine:
                cells += ['-'] * 5
                continue
            missing = sum(g['dL'] is None for g in mine)
            tilde = '~' if any(g['extrapolated'] for g in mine) else ''
            cells += [cell(stats([g['loss'] for g in mine]), 'loss'),
                      describe([g['dL'] for g in mine if g['dL'] is not None], 'dloss', missing=missing),
                      describe([g['sp_front'] for g in mine if g['sp_front'] is not None], 'sp',
                               never=sum(g['never'] for g in mine), missing=missing),
                      tilde + describe([g['sp_equiv'] for g in mine if g['sp_equiv'] is not None], 'sp', missing=missing),
                      describe([g['dL_size'] for g in mine if g['dL_size'] is not None], 'dloss') if any(
                          g['dL_size'] is not None for g in mine) else '-']
        print(f"| {recipe} | " + " | ".join(cells) + " |")
    print()


def best_recipe(grown, budget):
    """The recipe with the lowest mean final loss at `budget` (all its seeds), with its rows."""
    at = {}
    for g in grown:
        if g['budget'] == budget:
            at.setdefault(g['recipe'], []).append(g)
    if not at:
        return None, []
    recipe = min(at, key=lambda k: np.mean([g['loss'] for g in at[k]]))
    return recipe, at[recipe]


def answer(front, grown, budget):
    """What to train with `budget` FLOPs: the fitted N_opt and frontier loss there, and the best measured recipe at
    the nearest budget of the study."""
    budgets = list(front)
    logs = np.log(budgets)
    slope, icept = np.polyfit(logs, [f['mean'][0] for f in front.values()], 1)
    points = frontier_points(front)
    loss, extrapolated = loss_at(points, math.log(budget))
    outside = " (extrapolated: outside the measured budgets " + f"{budgets[0]:.3g}..{budgets[-1]:.3g})" if extrapolated else ""
    print(f"budget {budget:.3g} FLOPs{outside}")
    print(f"  compute-optimal size from scratch: N_opt = {math.exp(icept + slope * math.log(budget)):,.0f} non-embedding "
          f"params (power law through the {len(budgets)} budgets: N_opt ~ C^{slope:.2f})")
    print(f"  frontier loss there: {loss:.4f}")
    nearest = min({g['budget'] for g in grown} or budgets, key=lambda b: abs(math.log(b / budget)))
    recipe, mine = best_recipe(grown, nearest)
    if recipe is None:
        print("  no growth runs in this study")
        return
    print(f"  best growth recipe measured at C = {nearest:.3g}: {recipe}: final loss "
          f"{cell(stats([g['loss'] for g in mine]), 'loss')}, dL vs frontier "
          f"{describe([g['dL'] for g in mine if g['dL'] is not None], 'dloss')}, sp_equiv "
          f"{describe([g['sp_equiv'] for g in mine if g['sp_equiv'] is not None], 'sp')}")
    verdict = np.mean([g['dL'] for g in mine if g['dL'] is not None] or [float('nan')])
    print("  -> " + ("grow: it ends below the frontier" if verdict < 0 else
                     f"train the N_opt model from scratch: no recipe measured at C = {nearest:.3g} beats the frontier"))


def plot(front, grown, path, plt):
    """Left: loss against size per budget (scratch means with min-max bars, the fitted parabola, the growth runs'
    final models overlaid). Right: sp_equiv against budget per recipe."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5.5))
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for k, (budget, f) in enumerate(front.items()):
        ns = list(f['sizes'])
        losses = [[r['final_val_loss'] for r in f['sizes'][n]] for n in ns]
        mean = np.array([np.mean(v) for v in losses])
        err = np.array([[m - min(v), max(v) - m] for m, v in zip(mean, losses)]).T
        color = colors[k % len(colors)]
        ax.errorbar(ns, mean, yerr=err, fmt='o', color=color, label=f"scratch, C = {budget:.3g}")
        xs = np.log(ns)
        grid = np.linspace(xs.min(), xs.max(), 100)
        ax.plot(np.exp(grid), np.polyval(np.polyfit(xs, mean, 2), grid), '-', color=color, lw=1)
        x, loss, _ = f['mean']
        ax.plot([math.exp(x)], [loss], '*', color=color, ms=14)
    markers = 'vs^DPXh<>p'
    recipes = list(dict.fromkeys(g['recipe'] for g in grown))
    budget_color = {b: colors[k % len(colors)] for k, b in enumerate(front)}
    for j, recipe in enumerate(recipes):
        mine = [g for g in grown if g['recipe'] == recipe]
        ax.scatter([g['params'] for g in mine], [g['loss'] for g in mine], marker=markers[j % len(markers)], s=30,
                   facecolors='none', edgecolors=[budget_color.get(g['budget'], 'k') for g in mine], label=recipe)
        budgets = sorted({g['budget'] for g in mine})
        sp = [[g['sp_equiv'] for g in mine if g['budget'] == b and g['sp_equiv'] is not None] for b in budgets]
        keep = [i for i, v in enumerate(sp) if v]
        bx.errorbar([budgets[i] for i in keep], [np.mean(sp[i]) for i in keep],
                    yerr=[np.std(sp[i], ddof=1) if len(sp[i]) > 1 else 0 for i in keep], marker=markers[j % len(markers)],
                    capsize=3, label=recipe)
    ax.set(xscale='log', xlabel='non-embedding parameters (final model)', ylabel='final val loss',
           title='isoFLOP profiles (star: fitted optimum); growth runs hollow, colored by budget')
    ax.legend(fontsize=7)
    bx.axhline(0, color='k', lw=0.8)
    bx.set(xscale='log', xlabel='budget (FLOPs)', ylabel='sp_equiv = C_front(L_growth) / C - 1',
           title='growth against the frontier (mean ± sd over seeds)')
    if recipes:
        bx.legend(fontsize=7)
    fig.tight_layout()
    save_fig(fig, path, plt)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('csv', help="a study's summary CSV (its curves CSV beside it gives sp_front)")
    p.add_argument('--budget', type=float, help="print what to train with this many FLOPs, and nothing else")
    p.add_argument('--train_tokens', type=float, help="the training set's tokens: adds an epochs column")
    p.add_argument('--out', help="the figure; default: the CSV's name with .png")
    args = p.parse_args(argv)
    try:
        rows, _ = read_csv(args.csv)
        curves = curves_path(args.csv)
        runs = read_curves(curves) if os.path.isfile(curves) else None
        front = fit_frontier(rows)
        grown = growth_rows(rows, runs, front)
        if args.budget is not None:
            if not args.budget > 0:
                raise ValueError(f"--budget must be > 0, got {args.budget}")
            answer(front, grown, args.budget)
            return
        print_frontier(front, args.train_tokens)
        if grown:
            print_growth(grown)
        plt = pyplot()
        if plt:
            png = args.out or os.path.splitext(args.csv)[0] + '.png'
            plot(front, grown, png, plt)
            print(f"wrote {png}")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == '__main__':
    main()
