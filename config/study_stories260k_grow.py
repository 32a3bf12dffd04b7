# Issue #13, part 3: frankenmodels and depth up-scaling of llama2.c's stories260K (5 layers), each grown by grow.py
# (a pre-step) and then trained further on the same TinyStories tokens (continued pre-training, all weights unless
# said otherwise); `base` trains the 5-layer model itself on them, the reference every arm is measured against:
#   dus: SOLAR depth up-scaling, layers [0,4) + [1,5) = 8 (SOLAR 10.7B, 2023, arXiv 2312.15166);
#   llama_pro / llama_pro_new: an identity block after every layer (5 -> 10, the only depths LLaMA Pro's even
#     spacing gives from 5 besides 6), all weights trained / only the new blocks (train_only='new', the LLaMA Pro
#     recipe; LLaMA Pro, 2024, arXiv 2401.02415);
#   lesa: a layer predicted between each pair of neighbours 1..4 (5 -> 8; LESA, 2025, arXiv 2502.13794);
#   stack: the model repeated up to 8 layers, 0..4, 0..2 (Stacking Your Transformers, 2024, arXiv 2405.15319);
#   passthrough: a frankenmerge of overlapping ranges, 0..4 + 2..4 (mergekit passthrough, 8 layers): the best
#     untrained 8-layer map that keeps both ends (results/stories260k_sweep8.csv); 0..3 + 1..4 would be dus itself.
# The first eval of each run (iter 0) is the loss right after growth; the curves are val loss against tokens (every
# run sees the same tokens). LESA's paper: LESA < LLaMA Pro < SOLAR in perplexity; does it start lowest here?
#
# Once:  python data/tinystories/prepare.py ... (see config/study_stories260k_tied.py)
# Run:   python study.py config/study_stories260k_grow.py --jobs 2
# Table: python study.py config/study_stories260k_grow.py --table   (results/stories260k_grow.csv)
#
# Size and time. Measured 2026-11-30 09:28-09:53 on the shared 2-core machine, OMP_NUM_THREADS=1, by the CPU
# seconds of short runs (30-50 iterations under a CPU-time wrapper; the load average was 8-21 from other sessions,
# so wall time was ~10x CPU time and meant nothing). Per iteration of 16 x 256 tokens: the
# 5-layer base 0.47 s, an 8-layer grown model (LESA's, all trained) 0.71 s, 10 layers ~0.89 s; LESA's fit and the
# other grow.py pre-steps a few seconds. Per run (CPU minutes, 300 iterations, 7 evals): base 3.1, 8 layers 4.9,
# llama_pro 6.1, llama_pro_new ~5.5: 34 per seed, 102 for 3 seeds = 51 minutes with --jobs 2 on two idle cores
# (CPU time measured under load overstates: the growth study's runs took 0.9x their estimate in wall time, 2 jobs).
name = 'stories260k_grow'
base = 'config/stories260k.py'  # stories260K, 16 x 256 tokens per iteration, lr 5e-4 cosine to 5e-5
seeds = [1, 2, 3]
scratch = 'base'

_STEPS = {'max_iters': 300, 'lr_decay_iters': 300}
_BASE = 'llama2c:../shared/models/stories260K/stories260K.bin'


_IMPORT = ('{runs}/stories260K.pt', f"python convert.py import {_BASE} --out {{runs}}/stories260K.pt")  # once


def _grown(options, **keys):
    """Train from stories260K grown by `python grow.py <options>` (the run's pre-steps)."""
    grow = f"python grow.py {options} --seed {{seed}} --out {{run}}/init.pt {{runs}}/stories260K.pt"
    return {**_STEPS, 'init_from': '{run}/init.pt', 'before': [_IMPORT, ('{run}/init.pt', grow)], **keys}


arms = {
    'base': dict(_STEPS),
    'dus': _grown('--method dus --m 1'),
    'llama_pro': _grown('--method llama_pro --every 1'),
    'llama_pro_new': _grown('--method llama_pro --every 1', train_only='new'),
    'lesa': _grown('--method lesa --lesa_range 1:4'),
    'stack': _grown('--method stack --n_layer 8'),
    'passthrough': _grown('--method map --map 0-4,2-4'),
}
