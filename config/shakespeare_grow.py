# "Does growth pay?" on the embedded default corpus (Shakespeare's works, characters), CPU scale.
# The target is an 8-layer 128-wide model. A grown run trains the 4-layer half for 250 iterations,
# grows it (grow.py, inside the run: fresh optimizer, the lr schedule restarts with its warm-up, data
# and FLOP counts go on) and then trains the big model on exactly the scratch run's schedule, so
# eval.py compare can ask how many FLOPs each run needs to reach the scratch run's losses.
# README's "Does growth pay?" section lists the runs; each takes a few minutes on a CPU core:
# $ python train.py config/shakespeare_grow.py --out_dir=out-grow/scratch --n_layer=8 --grow_at_iter=0 --max_iters=1200
# $ python train.py config/shakespeare_grow.py --out_dir=out-grow/stack
# $ python train.py config/shakespeare_grow.py --out_dir=out-grow/llama_pro --grow_method=llama_pro --grow_options="{'every': 1}"
# $ python train.py config/shakespeare_grow.py --out_dir=out-grow/random --grow_method=random --grow_options="{'every': 1}"
# $ python train.py config/shakespeare_grow.py --out_dir=out-grow/lesa --grow_method=lesa --grow_options="{'lesa_range': '1:4'}"
# $ python eval.py compare out-grow/scratch out-grow/stack out-grow/llama_pro out-grow/random out-grow/lesa --out growth.png
# (LESA can only insert between adjacent layers: 4 -> 7 layers.)

out_dir = 'out-grow/stack'
eval_interval = 100
eval_iters = 20  # the same 20 fixed batches in every run (they are keyed by seed)
log_interval = 50
always_save_checkpoint = False

dataset = 'shakespeare_char'
gradient_accumulation_steps = 1
batch_size = 16
block_size = 64

n_layer = 4  # the small model; 8 after growth
n_head = 4
n_embd = 128
dropout = 0.0
bias = False

grow_at_iter = 250
grow_method = 'stack'
grow_options = {'factor': 2}

learning_rate = 1e-3
max_iters = 1450  # 250 small + 1200 big, the scratch run's 1200
lr_decay_iters = 1200  # counted from the growth step: the big model gets the scratch run's schedule
min_lr = 1e-4
beta2 = 0.99
warmup_iters = 100
