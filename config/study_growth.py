# "Does growth pay?" as a study (issue #12): every arm over three seeds (a seed sets the init and the data order),
# each grown run measured against the scratch run of the same seed (sp = C_scratch(L)/C_run(L) - 1, the FLOPs of
# every small model and of any operator training included). The target is 8 layers x 128 on Shakespeare's plays
# (characters, val = four held-out plays); scratch trains it for _N iterations of 16 x 64 tokens; a grown run trains
# a small model first, grows it and then trains the big model on exactly the scratch run's schedule (_N iterations,
# the lr schedule restarting at the growth step unless grow_lr='continue'), on the same data stream.
#
# Once:  python data/shakespeare_char/prepare.py --halves    (the plays, and the training plays in two halves)
# Run:   python study.py config/study_growth.py --jobs 2     (resumable: run it again to go on)
# Table: python study.py config/study_growth.py --table; from the committed summary: python compare.py --from_csv results/growth.csv
#
# Four groups of arms:
# 1. operator grid (Stacking Your Transformers, 2024, arXiv 2405.15319, Fig. 3 at our scale): depth 4 -> 8 layers
#    G_direct (stack), G_zero (llama_pro), G_random (random), G_learn (ligo), interleave and LESA (4 -> 7: it only
#    inserts between neighbours); width 8 x 64 -> 8 x 128 G_direct (net2net), G_zero, G_random, G_learn (ligo).
# 2. when and how much: grow after 10%, 20% (= stack) and 40% of the budget; by factor 4 (2 -> 8 layers); in two
#    steps 2 -> 4 -> 8.
# 3. the growth step: AdamW moments carried over (grow_optimizer='carry'), one lr schedule over the whole run
#    (grow_lr='continue'), symmetry-breaking noise on the copies, and carry + continue together.
# 4. several small models: two 4 x 128 models, each trained for _AT iterations on its own half of the training plays,
#    grown into one 8 x 128 model (interleaved a0,b0,a1,b1,..., stacked a then b, LiGO from both) and two 8 x 64
#    models side by side in width (8 x 128); against one small model trained on all the text for the same total FLOPs
#    (2 x _AT iterations) and grown (stack_at40 for depth, width_at40 for width). Both small models' FLOPs count; they
#    could train in parallel, which would save _AT small-model iterations of wall time (about 20 seconds here).
#
# Size and time. Measured 2026-11-30 09:23-09:45 on the shared 2-core machine, OMP_NUM_THREADS=1, two runs at once,
# by the CPU seconds of short runs (train.py --max_iters=100..300 under a CPU-time wrapper): the load average was
# 12-21 (other sessions' trainings and tests), so wall time was ~10x the CPU time and meant nothing. Per iteration
# of 16 x 64 tokens: 8 x 128 0.184 s (100 and 300 iterations agree: 27.5 s and 63.7 s), 4 x 128 0.098 s,
# 8 x 64 0.067 s; start-up 3.6 s; an eval (2 x 20 batches, forward only) about 13 iterations' worth; LESA's fit a
# few seconds. Per run (CPU minutes): scratch 2.9, grown at 20% 3.25, at 40% 3.55, a half model 0.4, a merged run
# 3.0; LiGO's operator training not measured (allowed 1 minute). Per seed 81 minutes
# (28 arms), 3 seeds 243 CPU minutes: 122 minutes with --jobs 2 on two idle cores, ~160 minutes with the 1.3x that
# wall time took over CPU time for the README's runs (5-7 minutes each for 4.3 CPU minutes) - within 3 hours if
# the two cores are free. Shrunk from config/shakespeare_grow.py's 1,200 + 250 iterations to 800 + 160 for that.
# Checked with the full scratch/s1 and stack/s1 runs at once (09:54-10:05, load 6-10): 169 and 192 CPU seconds
# (2.8 and 3.2 minutes, as estimated), 594 and 627 s wall; val loss 2.108 and 2.029, stack's sp at L* +25%.
name = 'growth'
base = 'config/shakespeare_grow.py'  # 8 x 128 target, 16 x 64 tokens per iteration, lr 1e-3 cosine to 1e-4
seeds = [1, 2, 3]
losses = [2.4, 2.3, 2.2]  # target val losses in the table, besides each scratch run's final loss (~2.11 at 800)
scratch = 'scratch'

_N = 800  # the scratch run's iterations, and the big model's after growth
_AT = 160  # the default growth step: after 20% of the budget
_EVAL = {'eval_interval': 100, 'eval_iters': 20, 'lr_decay_iters': _N}


def _grow(at=_AT, n_layer=4, **keys):
    """A run that trains an n_layer x 128 model for `at` iterations, grows it, then trains it for _N more."""
    return {**_EVAL, 'n_layer': n_layer, 'grow_at_iter': at, 'max_iters': at + _N, **keys}


def _merge(method, *options, halves='half', arm_keys=None):
    """A run that starts from the two half models of its seed grown into one by grow.py (a pre-step), then trains
    for _N iterations on all the text."""
    grow = (f"python grow.py --method {method} {' '.join(options)} --seed {{seed}} --out {{run}}/init.pt "
            f"{{runs}}/{halves}_a/s{{seed}}/last.pt {{runs}}/{halves}_b/s{{seed}}/last.pt")
    return {**_EVAL, 'after': [f'{halves}_a', f'{halves}_b'], 'before': [('{run}/init.pt', grow)],
            'init_from': '{run}/init.pt', 'grow_at_iter': 0, 'max_iters': _N, **(arm_keys or {})}


_STACK = {'grow_method': 'stack', 'grow_options': {'factor': 2}}
_WIDTH = {'n_layer': 8, 'n_embd': 64, 'n_head': 2, 'grow_method': 'width'}  # head_dim 32 as the target's
_LIGO = {'ligo_steps': 100}  # LiGO's operator training steps (the paper's 100)
arms = {
    # 1. operator grid
    'scratch': {**_EVAL, 'n_layer': 8, 'grow_at_iter': 0, 'max_iters': _N},
    'stack': _grow(**_STACK),  # G_direct in depth: the whole model twice (0..3, 0..3)
    'interleave': _grow(grow_method='interleave', grow_options={'factor': 2}),  # each layer twice in place
    'llama_pro': _grow(grow_method='llama_pro', grow_options={'every': 1}),  # G_zero: identity blocks, exact
    'random': _grow(grow_method='random', grow_options={'every': 1}),  # G_random: fresh blocks
    'lesa': _grow(grow_method='lesa', grow_options={'lesa_range': '1:4'}),  # 4 -> 7 (between neighbours)
    'ligo': _grow(grow_method='ligo', grow_options={'n_layer': 8, **_LIGO}),  # G_learn
    'width': _grow(**_WIDTH, grow_options={'n_embd': 128, 'mlp_hidden': 512}),  # G_direct in width: Net2Net copies, exact
    'width_zero': _grow(**_WIDTH, grow_options={'n_embd': 128, 'mlp_hidden': 512, 'init': 'zero'}),
    'width_random': _grow(**_WIDTH, grow_options={'n_embd': 128, 'mlp_hidden': 512, 'init': 'random'}),
    'width_ligo': _grow(**{**_WIDTH, 'grow_method': 'ligo'}, grow_options={'n_embd': 128, **_LIGO}),
    # 2. when and how much (stack is the 20% arm)
    'stack_at10': _grow(at=_N // 10, **_STACK),
    'stack_at40': _grow(at=2 * _AT, **_STACK),  # also group 4's one small model on all the text
    'stack_x4': _grow(n_layer=2, grow_method='stack', grow_options={'factor': 4}),  # 2 -> 8 layers
    'stack_2_4_8': {**_grow(n_layer=2), 'grow_at_iter': 0,  # 2 -> 4 after 10% of the budget, 4 -> 8 after 20%
                    'grow_steps': [{'iter': _N // 10, 'method': 'stack'}, {'iter': _AT, 'method': 'stack'}]},
    # pushed further (added once the arms above had run: the later the growth, the larger sp so far; width_random
    # was the best operator at 20%)
    'stack_at60': _grow(at=_N * 6 // 10, **_STACK),
    'stack_at80': _grow(at=_N * 8 // 10, **_STACK),
    'width_random_at60': _grow(at=_N * 6 // 10, **_WIDTH, grow_options={'n_embd': 128, 'mlp_hidden': 512, 'init': 'random'}),
    # 3. the growth step itself (on stack)
    'stack_carry': _grow(**_STACK, grow_optimizer='carry'),
    'stack_continue': _grow(**_STACK, grow_lr='continue', lr_decay_iters=_AT + _N),
    'stack_noise': _grow(grow_method='stack', grow_options={'factor': 2, 'noise': 0.01}),
    'stack_carry_continue': _grow(**_STACK, grow_optimizer='carry', grow_lr='continue', lr_decay_iters=_AT + _N),
    # 4. several small models: 4 x 128 (depth) and 8 x 64 (width) halves, _AT iterations each on its half
    'half_a': {**_EVAL, 'dataset': 'shakespeare_char_a', 'grow_at_iter': 0, 'max_iters': _AT, 'lr_decay_iters': _AT},
    'half_b': {**_EVAL, 'dataset': 'shakespeare_char_b', 'grow_at_iter': 0, 'max_iters': _AT, 'lr_decay_iters': _AT},
    'halfw_a': {**_EVAL, 'dataset': 'shakespeare_char_a', 'n_layer': 8, 'n_embd': 64, 'n_head': 2, 'grow_at_iter': 0,
                'max_iters': _AT, 'lr_decay_iters': _AT},
    'halfw_b': {**_EVAL, 'dataset': 'shakespeare_char_b', 'n_layer': 8, 'n_embd': 64, 'n_head': 2, 'grow_at_iter': 0,
                'max_iters': _AT, 'lr_decay_iters': _AT},
    'merge_interleave': _merge('interleave'),  # a0,b0,a1,b1,a2,b2,a3,b3
    'merge_stack': _merge('stack'),  # a0..a3, b0..b3
    'merge_ligo': _merge('ligo', '--n_layer 8 --ligo_steps 100 --data data/shakespeare_char'),
    'merge_width': _merge('ligo', '--n_embd 128 --ligo_steps 0 --data data/shakespeare_char', halves='halfw'),  # side by side, untrained (block-diagonal)
    'width_at40': _grow(at=2 * _AT, **_WIDTH, grow_options={'n_embd': 128, 'mlp_hidden': 512}),  # one 8 x 64 model on all the text
}
