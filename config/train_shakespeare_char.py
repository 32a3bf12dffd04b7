# Quick start: a small character-level model on the default dataset (Shakespeare's works), about
# 4 minutes on a 2-core CPU. Prepare the data, train, sample:
# $ python data/shakespeare_char/prepare.py
# $ python train.py config/train_shakespeare_char.py
# $ python sample.py --out_dir=out-shakespeare-char
# The settings not about model size match nanoGPT's config/train_shakespeare_char.py, so nanoGPT's CPU
# recipe works unchanged on its data (prepare.py --input ../shared/data/tinyshakespeare/input.txt):
# $ python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1 \
#     --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

out_dir = 'out-shakespeare-char'
eval_interval = 250  # keep frequent because we'll overfit
eval_iters = 20
log_interval = 10  # don't print too too often
always_save_checkpoint = False  # best.pt is written on every improvement anyway

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 16
block_size = 128  # context of up to 128 previous characters

# a baby GPT model :)
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0  # too small to overfit in this budget
bias = False  # nanoGPT's default: no biases in Linear and LayerNorm layers

learning_rate = 1e-3  # with baby networks can afford to go a bit higher
max_iters = 2000
lr_decay_iters = 2000  # make equal to max_iters usually
min_lr = 1e-4  # learning_rate / 10 usually
beta2 = 0.99  # make a bit bigger because number of tokens per iter is small
warmup_iters = 100  # not super necessary potentially
