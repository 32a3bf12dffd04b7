# G_stack on TinyStories at CPU scale (Stacking Your Transformers, METHODS.md section 4): train a
# 2-layer model for 100 iterations, stack it into 4 layers (0,1,0,1: grow.py's 'stack') and continue
# to 300 iterations in all. At the growth step train.py builds a fresh optimizer and restarts the lr
# schedule (warmup again, as the paper's code does); the data stream and the token/FLOP counts go on.
# Small (128 wide, 128-token context) so that it runs in minutes on a 2-core CPU: the 50k-token GPT-2
# head dominates the compute at this size.
# Data (once): python data/tinystories/prepare.py --input ../shared/data/tinystories/train.txt ../shared/data/tinystories/valid.txt
# $ python train.py config/ts_grow.py
# The scratch baseline is the same run without growth, and the speedup at equal loss counts the
# small model's FLOPs too:
# $ python train.py config/ts_grow.py --grow_at_iter=0 --n_layer=4 --lr_decay_iters=300 --out_dir=out-ts-scratch
# $ python eval.py compare scratch=out-ts-scratch grown=out-ts-grow
# Other operators: --grow_method=llama_pro --grow_options="{'every': 1}" (exact identity blocks), or
# --grow_options="{'factor': 2, 'tied': True, 'lora_rank': 8}" (weight-tied virtual layers).

out_dir = 'out-ts-grow'
eval_interval = 50
eval_iters = 10
log_interval = 10

dataset = 'tinystories'
gradient_accumulation_steps = 1
batch_size = 8
block_size = 128

n_layer = 2  # the small model; 4 after growth
n_head = 4
n_embd = 128
dropout = 0.0
vocab_size = 50304  # GPT-2's 50257 padded up to a multiple of 64

grow_at_iter = 100
grow_method = 'stack'
grow_options = {'factor': 2}

learning_rate = 1e-3
max_iters = 300
lr_decay_iters = 200  # the schedule restarts at the growth step: it spans the 200 iterations after it
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 30
