# The IA3 variant of virtual layers: as config/ts_tied_lora.py, but each logical layer learns IA3 scaling
# vectors (keys, values, MLP hidden; initialised to ones) instead of LoRA. IA3's few scale vectors
# need a far higher lr than LoRA (5e-5 barely moves them; 3e-3 learns), so the lr here is high.
# $ python train.py config/ts_base.py && python train.py config/ts_tied_ia3.py

out_dir = 'out-ts-tied-ia3'
eval_interval = 100
eval_iters = 20
log_interval = 10

dataset = 'tinystories_bpe4096'  # the base's data
init_from = 'out-ts-base/best.pt'
gradient_accumulation_steps = 1
batch_size = 16

layer_map = [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3]
ia3 = True
train_only = 'adapters'

learning_rate = 3e-3
max_iters = 300
lr_decay_iters = 300
min_lr = 3e-4
beta2 = 0.99
warmup_iters = 20
