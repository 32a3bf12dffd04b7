# G_stack on TinyStories at CPU scale ("Stacking Your Transformers", 2024, arXiv 2405.15319): train a
# 2-layer model for 200 iterations, stack it into 4 layers (0,1,0,1: grow.py's 'stack') and continue
# to 800 iterations in all. At the growth step train.py builds a fresh optimizer and restarts the lr
# schedule (warmup again, as the paper's code does); the data stream and the token/FLOP counts go on.
# Small (128 wide, 128-token context, 1,024 tokens per iteration) with a 4,096-token byte-level BPE
# trained on the stories, so that it runs in minutes on a CPU. Measured end to end (`/usr/bin/time`) on an
# idle 2-core AMD EPYC with native bf16 (dtype='auto' picks bf16 there): 66 s wall, ~15k tok/s (~15 it/s)
# before growth and ~13.7k after; in float32 on one thread 137 s of CPU time (~8k / ~6k tok/s). If it runs
# much slower, the machine is busy: use OMP_NUM_THREADS=1. It ends at val loss ~3.83: story-like
# sentences, little plot.
# What it shows is the mechanics of growth, not a compute-optimal recipe: the 4-layer model has 1.31M parameters
# (the tied 4,096-token head counted) and sees 0.82M tokens, 0.6 per parameter. In the frontier study (README "Does
# growth pay?", characters) the compute-optimal models saw 150-190 tokens per parameter, and against the best-sized
# model trained from scratch on the same FLOPs growth lost at 2.5e11 FLOPs and won by 0.018 +- 0.013 at 1e12; a
# speedup of this run over its 4-layer scratch baseline is a speedup over an over-sized target.
# Data (once): python data/tinystories/prepare.py --vocab_size 4096 --input ../shared/data/tinystories/train.txt ../shared/data/tinystories/valid.txt
# $ python train.py config/ts_grow.py
# $ python sample.py --out_dir=out-ts-grow --start="Once upon a time"
# The scratch baseline is the same run without growth, and the speedup at equal loss counts the
# small model's FLOPs too:
# $ python train.py config/ts_grow.py --grow_at_iter=0 --n_layer=4 --lr_decay_iters=800 --out_dir=out-ts-scratch
# $ python eval.py compare scratch=out-ts-scratch grown=out-ts-grow
# Other operators: --grow_method=llama_pro --grow_options="{'every': 1}" (exact identity blocks), or
# --grow_options="{'factor': 2, 'tied': True, 'lora_rank': 8}" (weight-tied virtual layers).
# GPU, GPT-2 BPE (comparable with GPT-2-family models; the 50k-token head is most of the compute here):
# prepare without --vocab_size, then add --dataset=tinystories --vocab_size=50304 (50257 padded to a multiple of 64).

out_dir = 'out-ts-grow'
eval_interval = 200
eval_iters = 10
log_interval = 20

dataset = 'tinystories_bpe4096'
gradient_accumulation_steps = 1
batch_size = 8  # 800 steps of 8 reach val 3.84; 400 of 16 (same tokens and CPU time) 4.00
block_size = 128

n_layer = 2  # the small model; 4 after growth
n_head = 4
n_embd = 128
dropout = 0.0

grow_at_iter = 200
grow_method = 'stack'
grow_options = {'factor': 2}

learning_rate = 2e-3  # small model
max_iters = 800
lr_decay_iters = 600  # the schedule restarts at the growth step: it spans the 600 iterations after it
min_lr = 2e-4
beta2 = 0.99
warmup_iters = 30
