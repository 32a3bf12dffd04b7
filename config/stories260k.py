# llama2.c's stories260K (a 5-layer, 64-wide Llama trained on TinyStories; 260K params) trained further on
# TinyStories encoded with its own 512-piece tokenizer: the train.py settings shared by the stories260K studies
# (config/study_stories260k_*.py), which add the model (init_from or n_layer/n_embd/...) and what trains.
# Data (once): python data/tinystories/prepare.py --input ../shared/data/tinystories/train.txt
#   ../shared/data/tinystories/valid.txt --tokenizer llama2c --tokenizer_path ../shared/models/stories260K/tok512.bin
# $ python train.py config/stories260k.py --out_dir=out-260k   (continued pre-training of the model itself)

out_dir = 'out-260k'
init_from = 'llama2c:../shared/models/stories260K/stories260K.bin'
eval_interval = 50
eval_iters = 20  # the same 20 fixed batches in every run (keyed by seed): 20 x 16 x 256 = 82K val tokens
log_interval = 25
always_save_checkpoint = False

dataset = 'tinystories_llama2c'
gradient_accumulation_steps = 1
batch_size = 16
block_size = 256  # the model's context is 512; half keeps CPU steps short
dropout = 0.0

learning_rate = 5e-4
max_iters = 400
lr_decay_iters = 400
min_lr = 5e-5
beta2 = 0.99
warmup_iters = 20
