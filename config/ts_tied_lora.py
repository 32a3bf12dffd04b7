# Weight-tied virtual layers with per-layer LoRA at small scale: the trained 4-layer TinyStories model of
# config/ts_base.py runs as 12 logical layers over its 4 blocks, [0,1,1,1,1,1,2,2,2,2,2,3] (first
# and last layer kept in place). Every logical layer gets its own LoRA
# (r=8, alpha=16, dropout=0.1, on qkv, attention out, MLP in and out); the base weights are frozen
# and only the adapters train. Repeated blocks share weights, so the stored model stays 4 blocks.
# $ python train.py config/ts_base.py          # the base (out-ts-base/best.pt)
# $ python train.py config/ts_tied_lora.py
# Compare with the base: python eval.py ppl out-ts-base/best.pt out-ts-tied-lora/best.pt --data data/tinystories_bpe4096

out_dir = 'out-ts-tied-lora'
eval_interval = 100
eval_iters = 20
log_interval = 10

dataset = 'tinystories_bpe4096'  # the base's data
init_from = 'out-ts-base/best.pt'
gradient_accumulation_steps = 1
batch_size = 16

layer_map = [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3]
lora_rank = 8
lora_alpha = 16.0
lora_dropout = 0.1
train_only = 'adapters'
dropout = 0.0  # the adapters have their own dropout

learning_rate = 1e-3
max_iters = 300
lr_decay_iters = 300
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 20
