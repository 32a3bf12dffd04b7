"""
Train a GPT. One process (CPU, one GPU, Apple mps):
$ python train.py config/train_shakespeare_char.py --batch_size=32 --compile=True

DDP on 8 GPUs of one node (gradient_accumulation_steps is the GLOBAL count, split among processes):
$ torchrun --standalone --nproc_per_node=8 train.py config/ts_base.py

DDP on 2 nodes of 8 GPUs: run on the master node (ip 123.456.123.456) and on the worker:
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=0 --master_addr=123.456.123.456 --master_port=1234 train.py
$ torchrun --nproc_per_node=8 --nnodes=2 --node_rank=1 --master_addr=123.456.123.456 --master_port=1234 train.py
(If your cluster does not have Infiniband interconnect prepend NCCL_IB_DISABLE=1.)

Models that do not fit one GPU under DDP: --fsdp=True shards parameters, gradients and AdamW state
(FSDP2); checkpoints are then sharded directories (last.dcp), which every script reads and which
resume on any number of processes. --activation_checkpointing=True recomputes each layer's
activations in the backward pass instead of keeping them.

Ctrl-C or SIGTERM: the current iteration finishes, out_dir/last.pt is saved, and the exit code is
130 / 143 (128 + signal). `--init_from=resume` continues exactly where it stopped.
"""
import json
import math
import os
import signal
import sys
import time
from dataclasses import fields

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from checkpoint import build_model, check_out_path, load_any, make_checkpoint, run_checkpoint, save_checkpoint
from configurator import resolve
from device import choose
from model import ADAPTABLE_KEYS, GPT, GPTConfig
from profiling import start_profile
from tokenizer import check_same_tokenizer
from tokens import TokenData, rng_seed
from tracking import open_trackers

# -----------------------------------------------------------------------------
# default config values: a GPT-2 (124M) shaped model on the default dataset
# I/O
out_dir = 'out'
eval_interval = 2000
log_interval = 1
eval_iters = 200
eval_only = False  # evaluate once, print, exit
always_save_checkpoint = True  # last.pt at every eval; if False only at the end, on growth and on a signal
init_from = 'scratch'  # 'scratch' | 'resume' (out_dir/last.pt) | path/to/ckpt.pt | 'hf:<dir>' | 'llama2c:<file>'
train_only = 'all'  # 'all' | 'adapters' | 'new' (blocks added by growth) | a regex over parameter names
progress = True  # tqdm progress bar on rank 0 when stderr is a terminal
# tracking beside log.jsonl (tracking.py): every log record also to Weights & Biases and/or TensorBoard
wandb_log = False  # WANDB_MODE=offline writes out_dir/wandb without a network
wandb_project = 'nanogrow'
wandb_run_name = None  # None = out_dir's name
tensorboard_log = False  # out_dir/tensorboard
# data
dataset = 'shakespeare_char'
data_dir = None  # None = data/<dataset> next to this file
gradient_accumulation_steps = 5 * 8  # GLOBAL micro-steps per iteration (shared out among the processes)
batch_size = 12  # micro-batch size per process
# model; every other GPTConfig field (n_kv_head, norm, pos, mlp, layer_map, lora_*, ia3, adapter_layers,
# lowrank_*, ...) is a config key as well, with model.py's default
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
dropout = 0.0  # for pretraining 0 is good, for finetuning try 0.1+
bias = True
vocab_size = None  # None = the dataset's (meta.json)
# adamw optimizer
learning_rate = 6e-4  # max learning rate
max_iters = 600000  # total number of optimizer steps
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip gradients at this norm, or 0.0 to disable
# learning rate: linear warmup, then down to min_lr at lr_decay_iters, then min_lr
decay_lr = True
warmup_iters = 2000
lr_decay_iters = 600000  # ~= max_iters per Chinchilla
min_lr = 6e-5  # ~= learning_rate/10 per Chinchilla
lr_schedule = 'cosine'  # 'cosine' decay all the way | 'wsd': warm-up, stable at learning_rate, one decay at the end
decay_frac = 0.2  # wsd: the decay spans the last decay_frac of lr_decay_iters (1 - sqrt shape; Hagele et al. 2024)
# growth during the run (grow.py). One step: grow_at_iter, grow_method, grow_options; several: grow_steps,
# e.g. [{'iter': 200, 'method': 'stack'}, {'iter': 600, 'method': 'stack', 'options': {'n_layer': 8}}]
grow_at_iter = 0  # 0 = never
grow_method = 'stack'
grow_options = {}
grow_steps = []
grow_optimizer = 'fresh'  # at a growth step: 'fresh' AdamW | 'carry' (moments of copied tensors carried over)
grow_lr = 'restart'  # 'restart' (warm-up and decay start again at each growth step) | 'continue' (one schedule)
# system
device = 'auto'  # 'auto' (cuda > mps > cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
dtype = 'auto'  # 'auto' (device.py's policy) | 'float32' | 'bfloat16' | 'float16'
compile = False  # torch.compile the model (falls back to eager, with a note, if compilation fails)
backend = 'auto'  # torchrun runs: 'auto' (nccl on cuda, gloo otherwise) | 'nccl' | 'gloo'
fsdp = False  # under torchrun: shard parameters, gradients and optimizer state (FSDP2) instead of DDP
activation_checkpointing = False  # recompute each layer's activations in backward: less memory, ~1/3 more compute
peak_flops = None  # per-device peak FLOP/s for mfu; None = 312e12 (A100 bf16) on cuda, no mfu elsewhere
profile = False  # torch.profiler over a window of steps: trace, per-op table (+ CUDA memory snapshot) in out_dir/profile
profile_start = 5  # iterations before the window (plus one profiler warm-up step)
profile_steps = 3  # iterations recorded
seed = 1337
# -----------------------------------------------------------------------------
defaults = {k: v for k, v in globals().items() if not k.startswith('_') and isinstance(v, (int, float, bool, str, list, dict, type(None)))}
model_keys = [f.name for f in fields(GPTConfig)]
SCHEDULE_KEYS = ('lr_schedule', 'learning_rate', 'min_lr', 'warmup_iters', 'lr_decay_iters', 'decay_frac', 'decay_lr',
                 'grow_lr')  # the learning-rate schedule, logged at the start of every run
defaults.update({k: getattr(GPTConfig(), k) for k in model_keys if k not in defaults})


def stable_end(config):
    """wsd: the iteration (counted like lr_decay_iters) at which the stable phase ends and the decay starts."""
    return round(config['lr_decay_iters'] * (1 - config['decay_frac']))


def check_run(config, explicit, ckpt):
    """Every training option checked before any work (ValueError naming the key) -> (growth schedule,
    device/dtype policy). The model's own config is GPTConfig's to check."""
    for k in ('eval_interval', 'log_interval', 'eval_iters', 'batch_size', 'gradient_accumulation_steps'):
        if config[k] < 1:
            raise ValueError(f"{k} must be >= 1, got {config[k]}")
    for k in ('max_iters', 'warmup_iters', 'lr_decay_iters', 'min_lr', 'weight_decay', 'grad_clip', 'grow_at_iter'):
        if config[k] < 0:
            raise ValueError(f"{k} must be >= 0, got {config[k]}")
    if not config['learning_rate'] > 0:
        raise ValueError(f"learning_rate must be > 0, got {config['learning_rate']}")
    for k in ('beta1', 'beta2'):
        if not 0 <= config[k] < 1:
            raise ValueError(f"{k} must be in [0, 1), got {config[k]}")
    if not config['eval_only']:
        check_out_path(config['out_dir'], directory=True)
    if config['decay_lr'] and config['lr_decay_iters'] <= config['warmup_iters']:
        raise ValueError(f"lr_decay_iters={config['lr_decay_iters']} must exceed warmup_iters={config['warmup_iters']}")
    if config['lr_schedule'] not in ('cosine', 'wsd'):
        raise ValueError(f"lr_schedule must be 'cosine' or 'wsd', got {config['lr_schedule']!r}")
    if not 0 < config['decay_frac'] <= 1:
        raise ValueError(f"decay_frac must be in (0, 1], got {config['decay_frac']}")
    if config['decay_lr'] and config['lr_schedule'] == 'wsd' and stable_end(config) < config['warmup_iters']:
        raise ValueError(f"lr_schedule='wsd': the decay (the last decay_frac={config['decay_frac']} of lr_decay_iters="
                         f"{config['lr_decay_iters']}) would start inside the warm-up ({config['warmup_iters']} iterations)")
    if config['grow_at_iter'] and config['grow_steps']:
        raise ValueError("give grow_at_iter (one growth step) or grow_steps (several), not both")
    schedule = config['grow_steps'] or ([dict(iter=config['grow_at_iter'], method=config['grow_method'],
                                              options=config['grow_options'])] if config['grow_at_iter'] else [])
    if schedule or {'grow_method', 'grow_options'} & set(explicit):  # a typo must not wait for a growth step
        from grow import check_growth_schedule  # only runs that grow need grow.py
        given = schedule or [dict(iter=1, method=config['grow_method'], options=config['grow_options'])]
        checked = check_growth_schedule(given)
        schedule = checked if schedule else []
    for key, allowed in (('grow_optimizer', ('fresh', 'carry')), ('grow_lr', ('restart', 'continue'))):
        if config[key] not in allowed:
            raise ValueError(f"{key} must be one of {allowed}, got {config[key]!r}")
    if config['fsdp'] and int(os.environ.get('RANK', -1)) == -1:
        raise ValueError("fsdp=True shards over the processes of a torchrun launch: run under torchrun")
    if config['fsdp'] and (config['dtype'] == 'float16' or config['grow_optimizer'] == 'carry'):
        raise ValueError("fsdp=True works with dtype float32/bfloat16 and grow_optimizer='fresh'")
    if ckpt is None:  # the model's config, checked before anything else (vocab_size may come from the data)
        GPTConfig.from_dict({**{k: config[k] for k in model_keys}, 'vocab_size': config['vocab_size'] or 1})
    policy = choose(config['device'], config['dtype'], width=(ckpt['model_args'] if ckpt else config)['n_embd'])
    if config['decay_lr'] and config['min_lr'] > config['learning_rate']:
        raise ValueError(f"min_lr={config['min_lr']} exceeds learning_rate={config['learning_rate']}: the decay would raise it")
    return schedule, policy


ckpt = None  # the checkpoint the run starts from, if any
try:
    config, explicit = resolve(defaults, sys.argv[1:], types={f.name: f.type for f in fields(GPTConfig)})
    if config['init_from'] == 'resume':  # continue with the run's own config; the command line still overrides
        ckpt = run_checkpoint(config['out_dir'])
        config = {**config, **{k: v for k, v in ckpt['config'].items() if k in defaults}, **{k: config[k] for k in explicit}}
    elif config['init_from'] != 'scratch':
        ckpt = load_any(config['init_from'])
    schedule, policy = check_run(config, explicit, ckpt)
except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
globals().update(config)
device, device_type = policy.device, policy.device_type
# -----------------------------------------------------------------------------

ddp = int(os.environ.get('RANK', -1)) != -1  # is this a torchrun run? (DDP, or FSDP with fsdp=True)
if ddp:
    dist.init_process_group(backend=backend if backend != 'auto' else 'nccl' if device_type == 'cuda' else 'gloo')
    ddp_rank, ddp_local_rank, ddp_world_size = int(os.environ['RANK']), int(os.environ['LOCAL_RANK']), int(os.environ['WORLD_SIZE'])
    if device_type == 'cuda':
        device = f'cuda:{ddp_local_rank}'
        torch.cuda.set_device(device)
else:
    ddp_rank, ddp_local_rank, ddp_world_size = 0, 0, 1
master_process = ddp_rank == 0  # does logging and checkpointing
write_files = master_process and not eval_only
say = (lambda msg: tqdm.write(msg, file=sys.stderr)) if master_process else (lambda msg: None)  # diagnostics: stderr
for k in explicit:
    say(f"config: {k} = {config[k]!r}")
if gradient_accumulation_steps % ddp_world_size:  # round up, as few micro-steps as possible per process
    say(f"note: gradient_accumulation_steps={gradient_accumulation_steps} does not divide among {ddp_world_size} processes; "
        f"using {-(-gradient_accumulation_steps // ddp_world_size)} per process")
gradient_accumulation_steps = -(-gradient_accumulation_steps // ddp_world_size)  # per process from here on
ctx = policy.autocast()
# seeds the generator dropout draws from (torch.manual_seed would seed every backend, 30x slower)
seed_device = {'cuda': torch.cuda.manual_seed, 'mps': torch.mps.manual_seed}.get(device_type, torch.default_generator.manual_seed)
torch.backends.cuda.matmul.allow_tf32 = True  # allow tf32 on matmul
torch.backends.cudnn.allow_tf32 = True  # allow tf32 on cudnn

# data: train.bin / val.bin token streams, meta.json describes the tokenizer
data_dir = data_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', dataset)
try:
    data = TokenData(data_dir)
except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


def get_batch(split, *key):
    x, y = data.batch(split, block_size, batch_size, (seed, split, *key))
    if device_type == 'cuda':  # pin arrays x,y, which allows us to move them to GPU asynchronously (non_blocking=True)
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def check_all_blocks_run(cfg, scratch):
    """A layer_map that never runs some stored blocks trains nothing in them and counts them as parameters:
    almost always a mistake (eval.py sweep runs such maps on purpose, without training)."""
    used = sorted(set(cfg.physical_map()))
    unused = sorted(set(range(cfg.n_layer)) - set(used))
    if not unused:
        return
    if scratch:
        fix = f"set n_layer={len(used)}" + ("" if used == list(range(len(used))) else
                                            f" and layer_map={[used.index(i) for i in cfg.layer_map]}")
    else:
        fix = "to drop blocks of a trained model, make a model of the ones you keep with grow.py --method map"
    raise ValueError(f"layer_map {cfg.layer_map} never runs block(s) {unused} of the {cfg.n_layer} stored: "
                     f"they would be stored and counted but never trained; {fix}")


# model: from scratch, or from a checkpoint (resume / weights of another run / an imported model)
iter_num, best_val_loss, tokens_seen, flops_spent, elapsed_before = 0, float('inf'), 0, 0.0, 0.0
growths, provenance = [], None  # the iterations at which this run grew its model; how the model was grown
meta = data.meta
try:
    if init_from == 'scratch':
        if vocab_size is None and meta is None:
            raise ValueError(f"no meta.json in {data_dir}: set vocab_size")
        model_args = {k: config[k] for k in model_keys}
        model_args['vocab_size'] = meta['vocab_size'] if vocab_size is None else vocab_size
        model_config = GPTConfig.from_dict(model_args)
        if 'layer_map' in explicit:
            check_all_blocks_run(model_config, scratch=True)
        torch.manual_seed(seed)
        raw_model = GPT(model_config)
    else:
        # the checkpoint defines the architecture; adapter/virtual-layer keys and dropout may be added to it
        overrides = {} if init_from == 'resume' else {k: config[k] for k in explicit if k in ADAPTABLE_KEYS}
        ignored = [k for k in explicit if k in model_keys and k not in ADAPTABLE_KEYS and k != 'block_size'
                   and config[k] != ckpt['model_args'].get(k)]
        if ignored and init_from != 'resume':
            theirs = ', '.join(f"{k}={ckpt['model_args'].get(k)!r}" for k in ignored)
            say(f"note: init_from defines {theirs}; the config's values are ignored")
        # a sharded checkpoint's tensors are read after sharding (below); until then, the shapes
        raw_model = GPT(GPTConfig.from_dict(ckpt['model_args'])) if ckpt.get('sharded') else build_model(ckpt, **overrides)
        if init_from != 'resume' and 'block_size' in explicit and block_size != raw_model.config.block_size:
            if block_size > raw_model.config.block_size:
                raise ValueError(f"block_size={block_size} exceeds the checkpoint's {raw_model.config.block_size}")
            raw_model.crop_block_size(block_size)  # model surgery: a shorter context than it was trained with
        tokens_seen, flops_spent, elapsed_before = ckpt['tokens_seen'], ckpt['flops_spent'], ckpt['elapsed']
        provenance = ckpt['provenance']
        if init_from == 'resume':
            iter_num, best_val_loss, growths = ckpt['iter_num'], ckpt['best_val_loss'], ckpt['growths']
            torch.set_rng_state(ckpt['rng']['torch'])
        if ckpt['tokenizer'] and meta:
            check_same_tokenizer(os.path.join(data_dir, 'meta.json'), meta, ckpt['tokenizer'])
        if 'layer_map' in explicit and init_from != 'resume':
            check_all_blocks_run(raw_model.config, scratch=False)
    if meta and meta['vocab_size'] > raw_model.config.vocab_size:
        raise ValueError(f"the dataset's vocab_size {meta['vocab_size']} exceeds the model's {raw_model.config.vocab_size}")
    if meta is None:
        for split in ('train', 'val'):
            data.check_ids(split, raw_model.config.vocab_size, "model's vocab_size")
    for split in ('train', 'val'):
        if raw_model.config.block_size >= len(data.tokens(split)):
            raise ValueError(f"{data.path(split)} has {len(data.tokens(split))} tokens, fewer than block_size+1 = "
                             f"{raw_model.config.block_size + 1}: use a smaller block_size or more data")
except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
tokenizer_meta = meta or (ckpt or {}).get('tokenizer')
block_size = raw_model.config.block_size


def place(m):
    """The model on its device, activation checkpointing set, sharded under FSDP (bf16 compute
    under bf16 autocast; the sharded master weights stay float32)."""
    m.to(device)
    m.set_activation_checkpointing(activation_checkpointing)
    if fsdp:
        from parallel import shard
        shard(m, param_dtype=policy.ptdtype if policy.dtype == 'bfloat16' else None)
    return m



def set_trainable(m):
    if train_only == 'new' and not provenance and schedule and not growths:
        return  # everything trains until a growth step creates the new blocks
    m.set_trainable(train_only, new_blocks=(provenance or {}).get('new_blocks', ()))


def wrap(m):
    """The module the training loop calls: compiled (if asked, and if compilation works here) and/or
    DDP-wrapped around the raw model. torch.compile fails lazily, at the first call, so a trial
    forward and backward on one batch decides; the gradients it leaves are dropped."""
    if compile:
        try:
            compiled = torch.compile(m)
            with ctx:
                loss = compiled(*get_batch('train', 'compile-check'))[1]
            loss.backward()
            m.zero_grad(set_to_none=True)
            m = compiled
        except Exception as e:
            m.zero_grad(set_to_none=True)
            say(f"note: torch.compile failed ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}); continuing eagerly")
    if ddp and not fsdp:
        m = DDP(m, device_ids=[ddp_local_rank] if device_type == 'cuda' else None)
    return m


try:
    set_trainable(raw_model)
    raw_model = place(raw_model)
    optimizer = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
    if init_from == 'resume' and ckpt.get('sharded'):
        from parallel import load_sharded
        load_sharded(ckpt['sharded'], raw_model, optimizer)
    elif init_from == 'resume':
        optimizer.load_state_dict(ckpt['optimizer'])
except ValueError as e:
    sys.exit(f"error: {e}")
scaler = torch.amp.GradScaler(device_type, enabled=(policy.dtype == 'float16'))
if init_from == 'resume':
    scaler.load_state_dict(ckpt['scaler'])
ckpt = None  # free up memory
model = wrap(raw_model)
tokens_per_iter = gradient_accumulation_steps * ddp_world_size * batch_size * block_size
if peak_flops is None and device_type == 'cuda':
    peak_flops = 312e12
say(f"device {device}, dtype {policy.dtype} ({policy.reason}), {ddp_world_size} process(es), tokens per iteration {tokens_per_iter:,}")
say("params: " + ", ".join(f"{k} {v:,}" for k, v in raw_model.param_counts().items()))

log_path = os.path.join(out_dir, 'log.jsonl')
if write_files:
    try:
        os.makedirs(out_dir, exist_ok=True)
        if init_from == 'resume' and os.path.isfile(log_path):  # drop records written after the checkpoint
            records = [json.loads(line) for line in open(log_path) if line.endswith('\n')]  # not a line cut off by a crash
            keep = [r for r in records if r['iter'] < iter_num or (r['iter'] == iter_num and r['type'] != 'train')]
            with open(log_path + '.tmp', 'w') as f:
                f.writelines(json.dumps(r) + '\n' for r in keep)
            os.replace(log_path + '.tmp', log_path)
    except OSError as e:  # no permission, a full disk
        sys.exit(f"error: cannot write to {out_dir}: {e}")


try:
    track = open_trackers(out_dir, config, wandb_log, tensorboard_log, wandb_project, wandb_run_name) if write_files else None
except ValueError as e:
    sys.exit(f"error: {e}")


def log(**record):
    if write_files:
        try:
            with open(log_path, 'a') as f:
                f.write(json.dumps(record) + '\n')
        except OSError as e:  # a full disk: stop with the last checkpoint as it is
            sys.exit(f"error: cannot append to {log_path}: {e.strerror}")
        if track:
            track(record)


def log_model():
    """The model's sizes as a log record (compare.py's parameter columns): at the start and after each growth."""
    memory = raw_model.sampling_memory(bytes_per_value=4)
    log(type='model', iter=iter_num, n_layer=raw_model.config.n_layer, n_logical=raw_model.config.n_logical,
        **{f'params_{k}': v for k, v in raw_model.param_counts().items()},
        sampling_bytes_fp32=memory['weights'] + memory['kv_cache'])


if init_from != 'resume':  # a resumed run has its records already
    log(type='schedule', iter=iter_num, **{k: config[k] for k in SCHEDULE_KEYS})
    log_model()


def get_lr(it):
    if grow_lr == 'restart' and growths:  # the schedule starts again at the last growth step
        it -= growths[-1]
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:  # 1) linear warmup for warmup_iters steps
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:  # 2) if it > lr_decay_iters, return min learning rate
        return min_lr
    if lr_schedule == 'wsd':  # 3) wsd: stable at the peak, then a 1 - sqrt decay to min_lr over the last decay_frac
        decay_start = stable_end(config)
        if it <= decay_start:
            return learning_rate
        return min_lr + (1 - math.sqrt((it - decay_start) / (lr_decay_iters - decay_start))) * (learning_rate - min_lr)
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)  # 3) in between, cosine decay down to min learning rate
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
    return min_lr + coeff * (learning_rate - min_lr)


@torch.no_grad()
def estimate_loss():
    """Mean loss over eval_iters fixed batches per split (the same every eval, so curves are not
    resampling noise), shared out among the processes and summed with all_reduce."""
    m = model.module if ddp and not fsdp else model
    m.eval()
    out = {}
    for split in ('train', 'val'):
        total = torch.zeros(2, device=device)  # loss sum, batch count
        # under FSDP every process must run as many forwards as the others (each gathers weights)
        for k in range(ddp_rank, -(-eval_iters // ddp_world_size) * ddp_world_size if fsdp else eval_iters, ddp_world_size):
            X, Y = get_batch(split, 'eval', k % eval_iters)
            with ctx:
                _, loss = m(X, Y)
            if k < eval_iters:
                total += torch.stack([loss.float(), torch.ones((), device=device)])
        if ddp:
            dist.all_reduce(total)
        out[split] = (total[0] / total[1]).item()
    m.train()
    return out


def evaluate():
    """estimate_loss at iter_num, printed and logged as an eval record."""
    losses = estimate_loss()
    if not all(map(math.isfinite, losses.values())):
        nonfinite("eval loss")
    say(f"iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    log(type='eval', iter=iter_num, tokens=tokens_seen, flops=flops_spent, train_loss=losses['train'],
        val_loss=losses['val'], lr=get_lr(iter_num), elapsed=elapsed())
    return losses


def train_step():
    """One optimizer step over gradient_accumulation_steps micro-batches; the mean loss (tensor)."""
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(gradient_accumulation_steps):
        slot = ddp_rank * gradient_accumulation_steps + micro_step  # global micro-batch index
        X, Y = get_batch('train', iter_num, slot)
        if ddp and not fsdp:  # only sync gradients at the last micro step (the official way is the model.no_sync() context manager)
            model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
        seed_device(rng_seed(seed, 'dropout', iter_num, slot))
        with ctx:
            _, loss = model(X, Y)
        loss_sum += loss.detach()
        scaler.scale(loss / gradient_accumulation_steps).backward()  # scale to account for gradient accumulation
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)  # flush the gradients as soon as we can, no need for this memory anymore
    return loss_sum / gradient_accumulation_steps


def checkpoint_now(weights=None, **train_state):
    """The current model as a checkpoint dict (weights only, unless train_state is given)."""
    return make_checkpoint(raw_model.state_dict() if weights is None else weights, raw_model.config.to_dict(),
                           tokenizer=tokenizer_meta, provenance=provenance, tokens_seen=tokens_seen, flops_spent=flops_spent,
                           elapsed=elapsed(), iter_num=iter_num, config=config, **train_state)


def save(*names):
    if not all(torch.isfinite(p.to_local() if hasattr(p, 'to_local') else p).all() for p in raw_model.parameters()):
        nonfinite("weights")  # never overwrite a good checkpoint with a broken model
    if eval_only:
        return
    train_state = dict(scaler=scaler.state_dict(), best_val_loss=best_val_loss, rng={'torch': torch.get_rng_state()},
                       growths=growths)
    try:
        if fsdp:  # every process writes its shards: last.dcp / best.dcp
            from parallel import save_sharded
            extra = {k: v for k, v in checkpoint_now({}, **train_state).items() if k != 'model'}  # weights go in the shards
            for name in names:
                save_sharded(os.path.join(out_dir, name.replace('.pt', '.dcp')), raw_model, optimizer, extra)
        elif write_files:
            ckpt = checkpoint_now(optimizer=optimizer.state_dict(), **train_state)
            for name in names:
                save_checkpoint(ckpt, os.path.join(out_dir, name))
        if write_files and names:  # config.json describes the saved run: a run that fails before saving leaves the old one
            with open(os.path.join(out_dir, '.config.json.tmp'), 'w') as f:
                json.dump(config, f, indent=2)
            os.replace(os.path.join(out_dir, '.config.json.tmp'), os.path.join(out_dir, 'config.json'))
    except (ValueError, OSError) as e:  # disk full, permissions: the previous checkpoint is intact
        sys.exit(f"error: {e}")


def grow_model(step):
    """The growth step: grow.py builds the bigger model from the current one; it gets its own optimizer
    (fresh, or carrying the moments of tensors it copied). Under FSDP process 0 grows the gathered
    model and every process shards the result. Returns (model, optimizer, grown checkpoint: its
    'model' on process 0 only under FSDP)."""
    from grow import Run, grow  # only runs that grow need grow.py
    if fsdp:
        from parallel import full_state_dict, load_full_state_dict
        weights = full_state_dict(raw_model)  # process 0: the whole model on the CPU; others: {}
    else:
        weights = {k: v.detach().to('cpu', copy=True) for k, v in raw_model.state_dict().items()}
    grown, error = None, None
    if master_process or not fsdp:
        try:
            stream = data.stream('train', block_size, batch_size, (seed, 'train', 'grow', iter_num))
            # LiGO / LESA train on the run's device, in float32 (as they always have: a run's numbers stay put)
            run = Run(device, progress=progress and master_process)
            grown = grow([checkpoint_now(weights)], step['method'], seed=seed, batches=stream, run=run, **step['options'])
        except (ValueError, FileNotFoundError) as e:
            error = str(e)
    if fsdp:  # the other processes need the grown architecture (and any error, not to wait forever)
        box = [error, grown and {k: v for k, v in grown.items() if k != 'model'}]
        dist.broadcast_object_list(box, src=0)
        error, grown = box[0], grown if master_process else box[1]
    try:
        if error:
            raise ValueError(error)
        new_model = GPT(GPTConfig.from_dict(grown['model_args'])) if fsdp else build_model(grown)
        new_model.set_trainable(train_only, new_blocks=grown['provenance']['new_blocks'])
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: growing at iter {iter_num}: {e}")
    new_model = place(new_model)
    if fsdp:
        load_full_state_dict(new_model, grown['model'] if master_process else {})
    new_optimizer = new_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
    if grow_optimizer == 'carry':
        carry_moments(raw_model, optimizer, new_model, new_optimizer, grown['provenance'])
    return new_model, new_optimizer, grown


def carry_moments(old, old_opt, new, new_opt, prov):
    """AdamW state of every tensor the grown model copied unchanged: blocks whose origin is a plain
    copy of a source layer ('a:i'), and the embeddings, final norm and head when their shapes match."""
    old_params = dict(old.named_parameters())
    source_block = {f'a:{i}': p for i, p in enumerate(old.config.physical_map())}
    for name, p in new.named_parameters():
        if not p.requires_grad:
            continue
        src = name
        if name.startswith('transformer.h.'):
            block, rest = name[len('transformer.h.'):].split('.', 1)
            origin = next((l['origin'] for l in prov['layers'] if l['block'] == int(block)), None)
            if origin not in source_block:
                continue
            src = f'transformer.h.{source_block[origin]}.{rest}'
        q = old_params.get(src)
        if q is not None and q.shape == p.shape and q in old_opt.state:
            new_opt.state[p] = {k: v.clone() for k, v in old_opt.state[q].items()}


stop_signal = 0


def on_signal(signum, frame):
    global stop_signal
    stop_signal = signum
    signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once (checkpoints are written atomically)
    if master_process:
        print(f"\n{signal.Signals(signum).name}: finishing this iteration, then saving {out_dir}/last.pt", file=sys.stderr)


def nonfinite(what):
    sys.exit(f"error: non-finite {what} at iter {iter_num}; stopped without saving (the last good checkpoint, "
             f"if any, is {out_dir}/last.pt). Try a lower learning_rate or dtype=float32")


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)
t_start = time.time()


def elapsed():  # seconds of training behind the current model, its sources' included
    return elapsed_before + time.time() - t_start


fpt = raw_model.flops_per_token()
evaluated_at = iter_num if init_from == 'resume' and not eval_only else -1  # a run is saved right after an eval
try:
    prof = start_profile(os.path.join(out_dir, 'profile'), profile_start, profile_steps, device_type, say) \
        if profile and master_process else None
except ValueError as e:
    sys.exit(f"error: {e}")
pbar = tqdm(total=max_iters, initial=iter_num, disable=None if master_process and progress else True, dynamic_ncols=True)
t_log, tokens_log = time.time(), 0
while True:
    # growth: the small model's last eval, the grown model (and its optimizer), its eval; best.pt follows it
    if len(growths) < len(schedule) and iter_num >= schedule[len(growths)]['iter'] and not eval_only:
        step = schedule[len(growths)]
        if iter_num != evaluated_at:
            evaluate()
        before = raw_model.param_counts()['unique'], raw_model.config.n_layer
        raw_model, optimizer, grown = grow_model(step)
        model, provenance, growths = wrap(raw_model), grown['provenance'], growths + [iter_num]
        operator_flops = grown['flops_spent'] - flops_spent  # what a learned operator's own training cost
        tokens_seen, flops_spent, fpt = grown['tokens_seen'], grown['flops_spent'], raw_model.flops_per_token()
        after = raw_model.param_counts()['unique'], raw_model.config.n_layer
        say(f"grew the model at iter {iter_num} ({step['method']}): {before[1]} -> {after[1]} blocks, {before[0]:,} -> {after[0]:,} params")
        log_model()
        log(type='grow', iter=iter_num, tokens=tokens_seen, flops=flops_spent, method=step['method'], options=step['options'],
            n_layer_before=before[1], n_layer_after=after[1], params_before=before[0], params_after=after[0],
            operator_flops=operator_flops, elapsed=elapsed())
        best_val_loss = evaluate()['val']
        save('last.pt', 'best.pt')
        evaluated_at = iter_num
        t_log, tokens_log = time.time(), 0  # growing is not training throughput
    lr = get_lr(iter_num)
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr

    # evaluate the loss on train/val sets and write checkpoints
    if (iter_num % eval_interval == 0 or iter_num == max_iters or eval_only) and iter_num != evaluated_at:
        losses = evaluate()
        evaluated_at = iter_num
        if iter_num > 0:
            names = ['last.pt'] if always_save_checkpoint or iter_num == max_iters else []
            if losses['val'] < best_val_loss:
                best_val_loss = losses['val']
                names.append('best.pt')
            save(*names)
        t_log, tokens_log = time.time(), 0  # eval and saving are not training throughput
    if eval_only or iter_num >= max_iters:
        break
    if ddp:  # every process must stop at the same iteration
        flag = torch.tensor(stop_signal, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        stop_signal = int(flag)
    if stop_signal:
        save('last.pt')
        pbar.close()
        say(f"stopped at iter {iter_num}; resume with --init_from=resume --out_dir={out_dir}")
        if ddp:
            dist.destroy_process_group()
        sys.exit(128 + stop_signal)

    # forward, backward, update
    loss = train_step()
    if prof:
        prof.step()
    tokens_seen += tokens_per_iter
    flops_spent += tokens_per_iter * fpt
    tokens_log += tokens_per_iter
    pbar.update()
    if iter_num % log_interval == 0:
        if ddp:  # the logged loss is the mean over micro-steps and processes
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        lossf = loss.item()  # a CPU-GPU sync point
        if not math.isfinite(lossf):
            nonfinite("training loss")
        dt = time.time() - t_log
        tok_per_sec = tokens_log / dt
        mfu = raw_model.estimate_mfu(tokens_log / ddp_world_size, dt, peak_flops) if peak_flops else None
        log(type='train', iter=iter_num, tokens=tokens_seen, flops=flops_spent, loss=lossf, lr=lr,
            tok_per_sec=tok_per_sec, mfu=mfu, elapsed=elapsed())
        if pbar.disable:
            say(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.2e}, {tok_per_sec:,.0f} tok/s" + (f", mfu {mfu * 100:.2f}%" if mfu else ""))
        else:
            pbar.set_postfix_str(f"loss {lossf:.4f}, lr {lr:.2e}, {tok_per_sec:,.0f} tok/s")
        t_log, tokens_log = time.time(), 0
    iter_num += 1

pbar.close()
if prof:
    prof.stop()  # writes the window if the run ended inside it
if ddp:
    dist.destroy_process_group()
