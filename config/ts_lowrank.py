# Low-rank substitution at small scale: config/ts_base.py's model trained from scratch
# with every attention matrix (q, k, v each factored, and the output projection) and every MLP
# matrix replaced by rank-r factors B @ A; no dense weight exists. Medium ranks, 19 (attention)
# and 31 (MLP) at width 384, i.e. about 5% and 8% of the width; at width 256 that
# is 13 and 21. Other settings: lowrank_attn='match' is the large rank (about the dense parameter
# count), 'dec:100:5' / 'inc:5:100' decreasing / increasing schedules, or a list per layer.
# $ python train.py config/ts_lowrank.py
# Compare: python eval.py compare out-ts-base/log.jsonl out-ts-lowrank/log.jsonl

out_dir = 'out-ts-lowrank'
eval_interval = 100
eval_iters = 20
log_interval = 10

dataset = 'tinystories_bpe4096'  # as config/ts_base.py
gradient_accumulation_steps = 1
batch_size = 16
block_size = 256

n_layer = 4
n_head = 8
n_embd = 256
dropout = 0.1
lowrank_attn = 13
lowrank_mlp = 21

learning_rate = 1e-3
max_iters = 600
lr_decay_iters = 600
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 50
