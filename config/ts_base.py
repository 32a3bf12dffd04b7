# TinyStories base model: a small GPT that growth runs start from (config/ts_grow.py, grow.py).
# Data: a 4,096-token BPE trained on the TinyStories subset in ../shared (233k train / 198k val tokens):
# $ python data/tinystories/prepare.py --vocab_size 4096 --input ../shared/data/tinystories/train.txt ../shared/data/tinystories/valid.txt
# $ python train.py config/ts_base.py
# 820k tokens (about 3.5 epochs), about 3.5 minutes of one CPU core (estimated from 40 measured
# iterations). On a GPU add --compile=True and scale it up; with GPT-2 BPE (prepare without --vocab_size)
# add --dataset=tinystories --vocab_size=50304 (50257 padded to a multiple of 64); its 50k-token head is
# then most of the compute (about 20 minutes on a CPU core).

out_dir = 'out-ts-base'
eval_interval = 50
eval_iters = 20
log_interval = 10

dataset = 'tinystories_bpe4096'
gradient_accumulation_steps = 1
batch_size = 8
block_size = 256

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.1  # the data is small: a few epochs

learning_rate = 2e-3  # small model, small batch
max_iters = 400
lr_decay_iters = 400
min_lr = 2e-4
beta2 = 0.99
warmup_iters = 40
