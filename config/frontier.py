# The base config of the frontier study (config/study_frontier.py): character-level Shakespeare plays (val = four
# held-out plays), 16 x 64 tokens per iteration, narrow models (width 32, 2 heads of 16) whose depth is the size axis.
# lr 8e-3: measured on 2026-12-04 at 1e12 FLOPs, seed 1 (final val loss, lr 4e-3 / 8e-3): 1 layer 1.841 / 1.850,
# 2 layers 1.843 / 1.855, 4 layers 1.964 / 1.920, 8 layers 2.137 / 2.046: the deep models need the higher lr far more
# than the shallow ones lose by it. float32: portable across the machines the study may span (some emulate bf16) and
# no slower than bf16 at this width on one core.
# A run: python train.py config/frontier.py --n_layer=4 --max_iters=2397 --lr_decay_iters=2397 --eval_interval=240
out_dir = 'out-frontier'
eval_interval = 100
eval_iters = 20  # the same 20 fixed batches in every run (keyed by seed)
log_interval = 100
always_save_checkpoint = True  # last.pt at every eval: a study stopped mid-run resumes there
progress = False

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 16
block_size = 64

n_layer = 4
n_head = 2
n_embd = 32
dropout = 0.0
bias = False

learning_rate = 8e-3
min_lr = 8e-4
beta2 = 0.99
warmup_iters = 100
lr_decay_iters = 2000  # the study sets it to each run's max_iters

dtype = 'float32'
