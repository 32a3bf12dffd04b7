# Issue #13, part 2: low-rank substitution trained from scratch on TinyStories (stories260K's 512-piece tokenizer).
# A GPT-Neo-style model (LayerNorm, learned positions, gelu_tanh MLP, biases but none on q/k/v; attention keeps the
# usual 1/sqrt(head_dim) scale) with 4 layers x 128 (the original experiment's 384 is ~10x the compute per token, beyond the
# CPU budget), every attention and/or MLP matrix replaced by rank-r factors B @ A (no dense weight):
#   full: dense (every arm over three seeds, each measured against full of its seed);
#   attn_lg / mlp_lg / both_lg: 'match' ranks (the factors hold about the dense matrix's parameters: the large rank);
#   attn_med / mlp_med / both_med: its Med ranks scaled to width 128 (19/384 and 31/384 of the width: 6 and 10);
#   inc / dec: ranks growing / shrinking geometrically over depth, 2 -> 33 (the original 5 -> 100 at 384);
#   med8: the Med model with 8 layers;
#   dense_52 / dense_60 / dense_64 / dense_84 / dense_108: narrower dense models at about the parameters of both_med
#     (163K), inc/dec (209K), med8 (244K), mlp_med (401K) and attn_med (636K): at equal parameters, low rank or
#     simply narrower?
# Parameters (unique; full 873,728): both_med 163,072 vs dense_52 165,256; inc/dec 209,408 vs dense_60 213,720; med8
# 243,968 vs dense_64 240,256; mlp_med 400,640 vs dense_84 395,976; attn_med 636,160 vs dense_108 633,528; Lg ~ full.
# The scatter (parameters vs final val loss) comes from results/stories260k_lowrank.csv and each run's
# param_counts (the checkpoint's), see the report.
#
# Once:  python data/tinystories/prepare.py ... (see config/study_stories260k_tied.py)
# Run:   python study.py config/study_stories260k_lowrank.py --jobs 2
# Table: python study.py config/study_stories260k_lowrank.py --table   (results/stories260k_lowrank.csv)
#
# Size and time. Measured 2026-11-30 09:28-09:53 on the shared 2-core machine, OMP_NUM_THREADS=1, by the CPU
# seconds of short runs (30-50 iterations under a CPU-time wrapper; the load average was 8-21 from other sessions,
# so wall time was ~10x CPU time and meant nothing). Per iteration of 16 x 128 tokens: full
# (4 x 128) 0.21 s. Again 2026-11-30 12:00 beside the growth study's two runs (load 2-3), 20 and 60 iterations:
# full 0.173 s, both_med 0.147 s, med8 0.298 s, dense_52 0.119 s per iteration; start-up 4 s, an eval ~1.5 s. Per run
# (600 iterations, 13 evals) 1.7-3.5 CPU minutes, ~2.1 on average: 45 runs ~95 CPU minutes = ~48 minutes with
# --jobs 2 on two idle cores.
name = 'stories260k_lowrank'
base = 'config/stories260k.py'  # data, evals; the model is built from scratch here
seeds = [1, 2, 3]
scratch = 'full'

_NEO = {'init_from': 'scratch', 'n_layer': 4, 'n_head': 4, 'n_embd': 128, 'block_size': 128, 'norm': 'layernorm',
        'pos': 'learned', 'mlp': 'gelu_tanh', 'bias': True, 'qkv_bias': False, 'tie_embeddings': True,
        'learning_rate': 1e-3, 'min_lr': 1e-4, 'warmup_iters': 50, 'max_iters': 600, 'lr_decay_iters': 600}
_MED = {'lowrank_attn': 6, 'lowrank_mlp': 10}
arms = {
    'full': dict(_NEO),
    'attn_lg': {**_NEO, 'lowrank_attn': 'match'},
    'mlp_lg': {**_NEO, 'lowrank_mlp': 'match'},
    'both_lg': {**_NEO, 'lowrank_attn': 'match', 'lowrank_mlp': 'match'},
    'attn_med': {**_NEO, 'lowrank_attn': _MED['lowrank_attn']},
    'mlp_med': {**_NEO, 'lowrank_mlp': _MED['lowrank_mlp']},
    'both_med': {**_NEO, **_MED},
    'inc': {**_NEO, 'lowrank_attn': 'inc:2:33', 'lowrank_mlp': 'inc:2:33'},
    'dec': {**_NEO, 'lowrank_attn': 'dec:2:33', 'lowrank_mlp': 'dec:2:33'},
    'med8': {**_NEO, **_MED, 'n_layer': 8},
    'dense_52': {**_NEO, 'n_embd': 52},
    'dense_60': {**_NEO, 'n_embd': 60},
    'dense_64': {**_NEO, 'n_embd': 64},
    'dense_84': {**_NEO, 'n_embd': 84},
    'dense_108': {**_NEO, 'n_embd': 108},
}
