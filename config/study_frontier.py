# Does growth beat the right-sized model? (issue #24) The compute-optimal frontier from scratch, and growth judged
# against it, on character-level Shakespeare plays (config/frontier.py: width 32, 2 heads, 16 x 64 tokens per
# iteration, lr 8e-3 cosine to 8e-4, float32).
#
# Once:  python data/shakespeare_char/prepare.py
# Run:   python study.py config/study_frontier.py --jobs 2      (resumable; a later sitting skips the recorded runs)
# Table: python frontier.py results/frontier.csv --train_tokens 4525616
#        python frontier.py results/frontier.csv --budget 2e12  (what to train with that compute)
#
# 1. The frontier (isoFLOP profiles, Hoffmann et al. 2022, approach 2): three budgets C, 4x apart (16x in all),
#    five sizes each trained from scratch for exactly C FLOPs (iterations = C / (FLOPs per token x 1,024 tokens)),
#    the lr schedule spanning each run, seeds 1-3. An arm is c<C>_L<layers>[w<width>] (width 32 unless named).
#    The sizes were chosen from a one-seed pilot at 1e12 (config/frontier.py's header): 1 and 2 layers of width 32
#    were best there, so the smallest budget needs sizes below one layer of width 32 (narrower single layers) to put
#    the optimum inside the grid, and the largest reaches 8 layers.
# 2. Growth (added once the frontier was measured, before any growth run; rule fixed here, before the frontier):
#    each recipe ends at T(C), the smallest measured depth at or beyond the fitted N_opt(C) at width 32, and starts
#    from T/2 (factor 2) or T/4 (factor 4) layers; growth times are fractions of the budget's FLOPs.
name = 'frontier'
base = 'config/frontier.py'
seeds = [1, 2, 3]
scratch = 'c2.5e11_L1'  # compare.py's sp column needs one reference arm; frontier.py ignores it

from model import GPT, GPTConfig  # FLOPs per token of each size, as train.py counts them

_TOKENS = 16 * 64  # per iteration (config/frontier.py)


def _fpt(n_layer, n_embd=32):
    cfg = GPTConfig(n_layer=n_layer, n_embd=n_embd, n_head=2, block_size=64, vocab_size=65, bias=False)
    return GPT(cfg).flops_per_token()


def _iters(budget, n_layer, n_embd=32):
    return round(budget / (_fpt(n_layer, n_embd) * _TOKENS))


def _scratch(budget, n_layer, n_embd=32):
    n = _iters(budget, n_layer, n_embd)
    return {'n_layer': n_layer, 'n_embd': n_embd, 'max_iters': n, 'lr_decay_iters': n, 'eval_interval': -(-n // 10)}


_SIZES = {2.5e11: [(1, 16), (1, 24), (1, 32), (2, 32), (4, 32)],
          1e12: [(1, 24), (1, 32), (2, 32), (4, 32), (8, 32)],
          4e12: [(1, 32), (2, 32), (4, 32), (6, 32), (8, 32)]}
def _c(budget):
    return f"{budget:g}".replace('e+', 'e')  # 2.5e11: arm names are directory names


arms = {f"c{_c(c)}_L{n}" + ('' if w == 32 else f"w{w}"): _scratch(c, n, w) for c, sizes in _SIZES.items() for n, w in sizes}


# 2. Growth recipes at a budget whose target depth is T (width 32): factor 2 starts from S2 = max(1, T // 2) layers,
#    factor 4 from S4 = max(1, T // 4); growth times are fractions of the budget's FLOPs spent on the small model(s).
#    (a) as the 8-layer study: stack / llama_pro, fresh AdamW, the cosine schedule restarting at the growth step
#    (b) wsd: one warm-up-stable-decay schedule over the run (decay over the last 20% of iterations), the growth step
#        late in the stable phase, the peak lr and the AdamW moments of the copied tensors kept across it
#    (c) midas: S4 -> 2 S4 -> 3 S4 -> 4 S4 by duplicating the middle S4 layers, stage k lasting k units of iterations
#        (PROP-1), one cosine schedule over the run, moments kept
#    and wsd_L<T>: scratch at T under the wsd schedule, the control for (b).
def _split(budget, depths, weights):
    """Iterations per stage so that stage k gets weights[k] of the budget's FLOPs."""
    return [round(budget * w / (_fpt(d) * _TOKENS)) for d, w in zip(depths, weights)]


def _grown(budget, start, factor, method, at, wsd=False):
    small, big = _split(budget, [start, start * factor], [at, 1 - at])
    options = {'factor': factor} if method == 'stack' else {'n_layer': start * factor}
    keys = {'n_layer': start, 'grow_at_iter': small, 'max_iters': small + big, 'grow_method': method,
            'grow_options': options, 'eval_interval': -(-(small + big) // 10)}
    if wsd:
        return {**keys, 'lr_schedule': 'wsd', 'lr_decay_iters': small + big, 'grow_lr': 'continue', 'grow_optimizer': 'carry'}
    return {**keys, 'lr_decay_iters': big}  # restart: the big model gets a whole schedule of its own


def _midas(budget, start):
    depths = [start * k for k in (1, 2, 3, 4)]
    unit = budget / (_TOKENS * sum(k * _fpt(d) for k, d in zip((1, 2, 3, 4), depths)))
    iters = [round(k * unit) for k in (1, 2, 3, 4)]
    at = [sum(iters[:k]) for k in (1, 2, 3)]
    return {'n_layer': start, 'max_iters': sum(iters), 'lr_decay_iters': sum(iters), 'eval_interval': -(-sum(iters) // 10),
            'grow_steps': [{'iter': i, 'method': 'midas', 'options': {'block': start}} for i in at],
            'grow_lr': 'continue', 'grow_optimizer': 'carry'}


def _recipes(budget, target):
    s2, s4 = max(1, target // 2), max(1, target // 4)
    wsd_scratch = _scratch(budget, target)
    return {'stack_f2_at25': _grown(budget, s2, 2, 'stack', 0.25), 'stack_f2_at50': _grown(budget, s2, 2, 'stack', 0.5),
            'llama_pro_f2_at25': _grown(budget, s2, 2, 'llama_pro', 0.25), 'stack_f4_at25': _grown(budget, s4, 4, 'stack', 0.25),
            'wsd_stack_f2_at50': _grown(budget, s2, 2, 'stack', 0.5, wsd=True),
            'wsd_stack_f4_at40': _grown(budget, s4, 4, 'stack', 0.4, wsd=True), 'midas_f4': _midas(budget, s4),
            f'wsd_L{target}': {**wsd_scratch, 'lr_schedule': 'wsd'}}


# budget -> T, from the measured frontier: N_opt 11.4k params at 2.5e11 (one layer of width 32 has 15.1k), 22.9k at
# 1e12 (two layers: 27.4k). At 4e12, to start its growth runs beside its frontier runs, T was set from the power law
# through those two optima (N_opt ~ C^0.50: 46k at 4e12, four layers: 52.1k) before its frontier was finished.
_TARGET = {2.5e11: 1, 1e12: 2, 4e12: 4}
arms.update({f"c{_c(c)}_{name}": keys for c, t in _TARGET.items() for name, keys in _recipes(c, t).items()})
