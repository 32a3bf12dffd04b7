"""
Benchmarks on the machine at hand (CPU first). Each section prints a markdown table:
  train     train-step ms/iter, tok/s and MFU for fp32 / bf16-autocast x eager / torch.compile;
            MFU is against a peak FLOP/s measured here by a large matmul in the same dtype
  adapters  step time with LoRA and IA3 relative to no adapters (full training and frozen base)
  generate  sampling tok/s with and without the KV cache
  memory    peak RSS while sampling from a tied model vs its untied equivalent (separate child
            processes), and parameter counts as tied repeats are added
  loss      (not in the default run) loss after loss_iters steps per mode, to check that a faster
            mode learns the same; each mode runs with two seeds, whose gap shows the noise
  profile   (not in the default run; needs --profile_dir) the summary of a train.py --profile=True window:
            the top ops by self time with calls, ms, GFLOP and GFLOP/s per step and self memory
  nanogpt   (not in the default run; needs --nanogpt=<a nanoGPT checkout> and --data_dir) nanogrow's
            train.py and nanoGPT's train.py side by side: same model, optimizer, lr schedule and data,
            each run side_iters iterations, taking turns side_rounds times; prints each program's
            median ms/iter, its own final val loss, and the speed ratio. nanogrow runs at its defaults
            (dtype auto); nanoGPT's CPU path is always float32. With --clock=cpu --threads=1 the ms/iter
            is CPU time (a 2-iteration run's subtracted from the full run's), robust to other load
The default model is nanoGPT's shakespeare_char CPU reference config; batches are drawn from a
random (but learnable) token chain, or from train.bin of a prepared data_dir.

$ python bench.py                                  # train, adapters, generate, memory (~3 min)
$ python bench.py --only=train --modes=fp32-eager --threads=1
$ python bench.py --only=loss --data_dir=data/shakespeare_char
$ python bench.py --json                          # one JSON object instead of tables
$ python bench.py --only=profile --profile_dir=out/profile   # after train.py ... --profile=True --out_dir=out
$ python bench.py --only=nanogpt --nanogpt=../nanoGPT --data_dir=data/shakespeare_char \
    --n_layer=6 --n_head=6 --n_embd=384 --block_size=256 --batch_size=8 --bias=False --side_iters=500 --side_rounds=1
The machine is measured as it is: other busy processes slow every number (the tables report how
much CPU others used during the run; above ~10% the numbers are not comparable).
"""
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext, redirect_stdout

import numpy as np
import torch

from configurator import configure
from device import choose
from model import GPT, GPTConfig
from profiling import summary

defaults = dict(
    only='train,adapters,generate,memory',  # comma-separated sections; 'loss' is extra (~1-2 min)
    # model and optimizer: nanoGPT's shakespeare_char CPU reference
    n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, dropout=0.0, bias=True,
    batch_size=12, learning_rate=1e-3, weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0,
    data_dir='',      # prepared dataset (train.bin + meta.json); '' = synthetic tokens
    modes='fp32-eager,fp32-compile,bf16-eager,bf16-compile',  # train (and loss) section rows
    mode='fp32-eager',  # the one mode the adapters and generate sections use
    threads=0,        # torch intra-op threads; 0 = torch's default
    clock='wall',     # 'wall' | 'cpu': this process's CPU time, robust to other load (use with --threads=1)
    warmup=10,        # untimed steps first (compilation happens here)
    iters=40,         # timed steps per variant; the median is reported
    lora_rank=8,
    gen_tokens=256, gen_block_size=256,  # generation runs the train model with this context
    # memory: width large enough that weights dominate the process
    mem_n_embd=1536, mem_n_head=12, mem_logical=12, mem_physical=4, mem_tokens=16,
    loss_iters=300,
    nanogpt='',       # path of a nanoGPT checkout (its train.py), for the nanogpt section
    side_iters=30,    # nanogpt section: iterations per run (lr decays over them; both evaluate at the end)
    side_rounds=2,    # runs per program, alternating
    side_eval_iters=20,  # batches per split in each program's eval
    side_dtype='auto',  # nanogrow's --dtype there
    side_compile=False,  # --compile for both programs
    profile_dir='',   # profile section: a train.py profile directory (out_dir/profile)
    seed=1337,
    json=False,
)
with redirect_stdout(sys.stderr):  # keep stdout for the tables (or the JSON)
    config = configure(defaults, ['--json=True' if a == '--json' else a for a in sys.argv[1:]])
as_json = config.pop('json')  # the flag shares its name with the module
globals().update(config)
sections = [s for s in only.split(',') if s]
bad = sorted(set(sections) - {'train', 'adapters', 'generate', 'memory', 'loss', 'nanogpt', 'profile'})
if bad:
    sys.exit(f"error: unknown section(s) {bad} in --only; valid: train, adapters, generate, memory, loss, nanogpt, profile")
if 'profile' in sections:
    try:
        profile_summary = summary(profile_dir)
    except ValueError as e:
        sys.exit(f"error: {e}")
if 'nanogpt' in sections:
    if not (nanogpt and os.path.isfile(os.path.join(nanogpt, 'train.py'))):
        sys.exit(f"error: --nanogpt={nanogpt!r} is not a nanoGPT checkout (no train.py there)")
    if not (data_dir and os.path.isfile(os.path.join(data_dir, 'val.bin'))):
        sys.exit("error: the nanogpt section needs --data_dir of a prepared dataset (train.bin, val.bin, meta.json)")
    if side_iters < 3 or side_rounds < 1 or side_eval_iters < 1:
        sys.exit("error: side_iters must be >= 3, side_rounds and side_eval_iters >= 1")
mode_list = [m for m in modes.split(',') if m]
for m in mode_list + [mode]:
    if m not in ('fp32-eager', 'fp32-compile', 'bf16-eager', 'bf16-compile'):
        sys.exit(f"error: unknown mode {m!r}; valid: fp32-eager, fp32-compile, bf16-eager, bf16-compile")
if clock not in ('wall', 'cpu'):
    sys.exit(f"error: clock must be 'wall' or 'cpu', got {clock!r}")
if threads > 0:
    torch.set_num_threads(threads)
tick = time.perf_counter if clock == 'wall' else time.process_time
repo = os.path.dirname(os.path.abspath(__file__))
results = {}


def say(msg):  # progress goes to stderr so stdout is only tables (or JSON)
    print(msg, file=sys.stderr, flush=True)


def table(title, header, rows):
    if as_json:
        return
    print(f"\n### {title}\n")
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for r in rows:
        print('| ' + ' | '.join(str(c) for c in r) + ' |')

# -----------------------------------------------------------------------------
# data: fixed batches from train.bin or from a random sparse bigram chain (every token has 4
# possible successors, so the best loss is ln 4 = 1.386: noise that a model can still learn)

if data_dir:
    meta_path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(os.path.join(data_dir, 'train.bin')):
        sys.exit(f"error: no train.bin in data_dir {data_dir!r} (run its prepare.py)")
    try:
        meta = json.load(open(meta_path)) if os.path.isfile(meta_path) else {}
    except ValueError as e:
        sys.exit(f"error: {meta_path} is not valid JSON ({e})")
    data = np.memmap(os.path.join(data_dir, 'train.bin'), dtype=np.dtype(meta.get('dtype', 'uint16')), mode='r')
    vocab_size = meta.get('vocab_size', vocab_size)
else:
    rng = np.random.default_rng(seed)
    succ, pick = rng.integers(0, vocab_size, (vocab_size, 4)).tolist(), rng.integers(0, 4, 200_000).tolist()
    chain = [0]
    for p in pick[1:]:
        chain.append(succ[chain[-1]][p])
    data = np.array(chain, dtype=np.int64)
if len(data) <= block_size + 1:
    sys.exit(f"error: {len(data)} tokens of data is too few for block_size {block_size}")


def batches(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ix = rng.integers(0, len(data) - block_size - 1, batch_size)
        x = torch.from_numpy(np.stack([data[i:i + block_size] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([data[i + 1:i + 1 + block_size] for i in ix]).astype(np.int64))
        out.append((x, y))
    return out


pool = batches(32, seed)
model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                  vocab_size=vocab_size, dropout=dropout, bias=bias)
tokens_per_iter = batch_size * block_size

# -----------------------------------------------------------------------------
# machine: how busy others make it, and peak matmul FLOP/s per dtype


def cpu_snapshot():
    """(busy, total) jiffies of the whole machine and this process tree's CPU jiffies; None off Linux."""
    try:
        with open('/proc/stat') as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return None
    own = sum(getattr(resource.getrusage(w), a) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for a in ('ru_utime', 'ru_stime'))
    return sum(v) - v[3] - v[4], sum(v), own * os.sysconf('SC_CLK_TCK')


def others_load(start):
    """Percent of the machine's CPU that other processes used since start."""
    end = cpu_snapshot()
    if start is None or end is None or end[1] == start[1]:
        return None
    others = (end[0] - start[0]) - (end[2] - start[2])
    return max(0.0, 100 * others / (end[1] - start[1]))


def measure_peak(dtype, n=2048, reps=5, budget=3.0):
    """Best achieved FLOP/s of an n x n matmul (on the same clock as the steps): the ceiling for MFU.
    n shrinks where the dtype is emulated (bf16 on a CPU without native support can be 1000x slower
    than fp32), so the measurement stays within about `budget` seconds."""
    a = torch.randn(256, 256).to(dtype)
    t0 = time.perf_counter()
    a @ a
    rough = 2 * 256 ** 3 / max(time.perf_counter() - t0, 1e-9)
    while n > 256 and 3 * reps * 2 * n ** 3 / rough > budget:
        n //= 2
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = 0.0
    for _ in range(reps):
        t0 = tick()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * n ** 3 / (tick() - t0))
    return best


start = cpu_snapshot()
time.sleep(0.5)
idle_load = others_load(start)
if idle_load is not None and idle_load > 10:
    advice = "" if clock == 'cpu' and threads == 1 else " (--clock=cpu --threads=1 measures this process's CPU time instead)"
    say(f"warning: other processes are using {idle_load:.0f}% of the CPU; wall-clock numbers will be slow and noisy{advice}")
say("measuring peak matmul FLOP/s...")
peak = {'fp32': measure_peak(torch.float32), 'bf16': measure_peak(torch.bfloat16)}
try:
    cpu_name = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
except (OSError, StopIteration):
    cpu_name = platform.processor() or platform.machine()
slow_bf16 = peak['bf16'] < 0.05 * peak['fp32']  # emulated: a bf16 training step would take minutes
if slow_bf16 and any(m.startswith('bf16') for m in mode_list + [mode]):
    say(f"note: bf16 matmuls run at {peak['bf16'] / 1e9:.1f} GFLOP/s here (no native bf16); skipping the bf16 modes")
    mode_list = [m for m in mode_list if not m.startswith('bf16')] or ['fp32-eager']
    mode = mode if not mode.startswith('bf16') else 'fp32-eager'
try:
    auto = choose('cpu', 'auto', width=n_embd)  # what train.py's dtype='auto' picks for this model here
except ValueError as e:
    sys.exit(f"error: {e}")
results['machine'] = dict(cpu=cpu_name, cores=os.cpu_count(), torch=torch.__version__,
                          threads=torch.get_num_threads(), interop_threads=torch.get_num_interop_threads(),
                          peak_flops=peak, auto_dtype=auto.dtype, auto_reason=auto.reason, others_load_at_start=idle_load)
table("machine", ['cpu', 'cores', 'torch', 'threads (intra/inter-op)', 'peak fp32 matmul', 'peak bf16 matmul', "dtype='auto' picks"],
      [[cpu_name, os.cpu_count(), torch.__version__, f"{torch.get_num_threads()}/{torch.get_num_interop_threads()}",
        f"{peak['fp32'] / 1e9:,.0f} GFLOP/s", f"{peak['bf16'] / 1e9:,.1f} GFLOP/s" + (" (emulated: bf16 modes skipped)" if slow_bf16 else ""),
        f"{auto.dtype} ({auto.reason})"]])

# -----------------------------------------------------------------------------
# one training step exactly as train.py takes it: autocast forward, backward, clip, AdamW


def build(**over):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**model_args, **over}))


def trainer(model, m, train_only='all'):
    """A zero-arg function that takes one training step of model in mode m on the next batch."""
    model.train()
    if train_only != 'all':
        model.set_trainable(train_only)
    opt = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), 'cpu')
    net = torch.compile(model) if m.endswith('compile') else model
    ctx = torch.autocast('cpu', dtype=torch.bfloat16) if m.startswith('bf16') else nullcontext()
    params = [p for p in model.parameters() if p.requires_grad]
    cycle = itertools.cycle(pool)

    def step(batch=None):
        x, y = batch or next(cycle)
        with ctx:
            _, loss = net(x, y)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss
    step.optimizer = opt
    return step


def timed(runs, warmup, iters, rounds=4):
    """Median seconds per call of each zero-arg function after `warmup` untimed calls. The variants
    take turns in rounds, so a load spike on a shared machine hits all of them alike."""
    first = {}
    for k, f in runs.items():
        say(f"  warming up {k}")
        t0 = time.perf_counter()
        f()
        first[k] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            f()
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, f in runs.items():
            for _ in range(max(1, iters // rounds)):
                t0 = tick()
                f()
                times[k].append(tick() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, first

# -----------------------------------------------------------------------------


if 'train' in sections:
    say("train: building one model per mode")
    steps = {m: trainer(build(), m) for m in mode_list}
    med, first = timed(steps, warmup, iters)
    fpt = build().flops_per_token()
    opt0 = next(iter(steps.values())).optimizer.defaults
    optim = 'fused' if opt0.get('fused') else 'foreach' if opt0.get('foreach') else 'for-loop'  # None = for-loop on CPU
    base = med.get('fp32-eager')
    rows, res = [], {}
    for m in mode_list:
        dt = med[m]
        mfu = fpt * tokens_per_iter / dt / peak['bf16' if m.startswith('bf16') else 'fp32']
        if mfu > 1:  # the step beat the "peak": the matmul probe ran while others held the CPU, so it means nothing
            mfu = None
        res[m] = dict(ms_per_iter=dt * 1e3, tok_per_sec=tokens_per_iter / dt, mfu=mfu, first_step_s=first[m])
        rows.append([m, f"{dt * 1e3:.2f}", f"{tokens_per_iter / dt:,.0f}",
                     f"{100 * mfu:.1f}%" if mfu is not None else "- (peak measured too low: busy machine)",
                     f"{base / dt:.2f}x" if base else '-', f"{first[m]:.1f}"])
    results['train'] = dict(modes=res, flops_per_token=fpt, tokens_per_iter=tokens_per_iter, optimizer=optim)
    table(f"train step: n_layer={n_layer} n_head={n_head} n_embd={n_embd} block_size={block_size} "
          f"batch_size={batch_size}, AdamW ({optim}), grad_clip={grad_clip}; {clock} clock, {torch.get_num_threads()} threads",
          ['mode', 'ms/iter', 'tok/s', 'MFU', 'speed vs fp32-eager', 'first step (s)'], rows)

if 'adapters' in sections:
    say(f"adapters: {mode}, LoRA r={lora_rank} on all targets, IA3")
    variants = {'none / full': ({}, 'all'),
                'LoRA / full': (dict(lora_rank=lora_rank), 'all'),
                'IA3 / full': (dict(ia3=True), 'all'),
                'LoRA / adapters only': (dict(lora_rank=lora_rank), 'adapters'),
                'IA3 / adapters only': (dict(ia3=True), 'adapters')}
    runs, trainable = {}, {}
    for k, (over, spec) in variants.items():
        model = build(**over)
        runs[k] = trainer(model, mode, spec)
        trainable[k] = model.param_counts()['trainable']
    med, _ = timed(runs, warmup, iters)
    base = med['none / full']
    pairs = {'LoRA / adapters only': 'LoRA / full', 'IA3 / adapters only': 'IA3 / full'}
    rows, res = [], {}
    for k in variants:
        res[k] = dict(ms_per_iter=med[k] * 1e3, overhead_vs_none=med[k] / base - 1, trainable=trainable[k])
        rows.append([k, f"{trainable[k]:,}", f"{med[k] * 1e3:.2f}", f"{100 * (med[k] / base - 1):+.1f}%",
                     f"{100 * (med[k] / med[pairs[k]] - 1):+.1f}%" if k in pairs else '-'])
    results['adapters'] = dict(mode=mode, lora_rank=lora_rank, variants=res)
    table(f"adapter overhead ({mode}, {clock} clock, same model as train)",
          ['adapters / trained', 'trainable params', 'ms/iter', 'vs none / full', 'frozen base vs full'], rows)

if 'generate' in sections:
    say(f"generate: {gen_tokens} new tokens, batch 1, {mode.split('-')[0]} eager")
    model = build(block_size=gen_block_size).eval()
    ctx = torch.autocast('cpu', dtype=torch.bfloat16) if mode.startswith('bf16') else nullcontext()
    prompt = torch.zeros((1, 1), dtype=torch.long)
    outs = {}

    def sampler(use_cache):
        def run():
            torch.manual_seed(seed)
            with ctx:
                outs[use_cache] = model.generate(prompt, gen_tokens, temperature=0.0, use_cache=use_cache)
        return run
    med, _ = timed({'cache': sampler(True), 'no cache': sampler(False)}, warmup=1, iters=3, rounds=3)  # whole generations
    same = torch.equal(outs[True], outs[False])
    rows, res = [], {}
    for c in ('no cache', 'cache'):
        res[c.replace(' ', '_')] = dict(seconds=med[c], tok_per_sec=gen_tokens / med[c])
        rows.append([c, f"{med[c]:.3f}", f"{gen_tokens / med[c]:,.0f}", f"{med['no cache'] / med[c]:.2f}x"])
    results['generate'] = dict(tokens=gen_tokens, greedy_outputs_match=same, **res)
    table(f"generation: {gen_tokens} tokens from a 1-token prompt, greedy, block_size={gen_block_size} "
          f"(cached and uncached outputs {'identical' if same else 'DIFFER'})",
          ['', 'seconds', 'tok/s', 'speedup'], rows)

# the memory child: build one model, sample from it, report its own peak RSS. VmHWM, not ru_maxrss:
# Linux carries ru_maxrss across fork+exec, so a child would inherit this (big) process's RSS.
CHILD = r"""
import json, resource, sys, torch
from model import GPT, GPTConfig
from profiling import summary

def rss_kib(field):
    try:
        return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(field + ':'))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
a = json.loads(sys.argv[1])
threads, tokens = a.pop('threads'), a.pop('tokens')
if threads:
    torch.set_num_threads(threads)
base = rss_kib('VmRSS')
torch.manual_seed(0)
model = GPT(GPTConfig(**a)).eval()
model.generate(torch.zeros((1, 1), dtype=torch.long), tokens, temperature=0.0)
print(json.dumps(dict(base_kib=base, peak_kib=rss_kib('VmHWM'), counts=model.param_counts())))
"""

if 'memory' in sections:
    tied_map = [i * mem_physical // mem_logical for i in range(mem_logical)]
    mem_args = dict(n_head=mem_n_head, n_embd=mem_n_embd, block_size=block_size, vocab_size=vocab_size, bias=bias)
    kinds = {f'tied: {mem_logical} logical on {mem_physical} blocks': dict(n_layer=mem_physical, layer_map=tied_map),
             f'untied: {mem_logical} blocks': dict(n_layer=mem_logical)}
    rows, res = [], {}
    for k, over in kinds.items():
        say(f"memory: sampling {mem_tokens} tokens from the {k} model in a child process")
        arg = dict(mem_args, **over, threads=threads, tokens=mem_tokens)
        p = subprocess.run([sys.executable, '-c', CHILD, json.dumps(arg)], cwd=repo, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"error: memory child for {k!r} failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        res[k] = dict(peak_rss_mib=r['peak_kib'] / 1024, base_rss_mib=r['base_kib'] / 1024,
                      unique_params=r['counts']['unique'], logical_params=r['counts']['logical'])
    t, u = res.values()
    ratio = t['peak_rss_mib'] / u['peak_rss_mib']
    for k, r in res.items():
        rows.append([k, f"{r['unique_params']:,}", f"{r['logical_params']:,}", f"{r['peak_rss_mib']:,.0f}",
                     f"{r['peak_rss_mib'] - r['base_rss_mib']:,.0f}"])
    # unique parameters stay flat as repeats of the same blocks are added (meta device: no memory)
    counts = {}
    with torch.device('meta'):
        for n in sorted({mem_physical, 2 * mem_physical, 3 * mem_physical, 4 * mem_physical}):
            m = GPT(GPTConfig(**mem_args, n_layer=mem_physical, layer_map=[i * mem_physical // n for i in range(n)]))
            counts[n] = dict(m.param_counts(), flops_per_token=m.flops_per_token())
    results['memory'] = dict(n_embd=mem_n_embd, models=res, tied_over_untied_rss=ratio, param_counts_by_logical=counts)
    table(f"memory: peak RSS sampling {mem_tokens} tokens, n_embd={mem_n_embd} (child processes); "
          f"tied / untied = {ratio:.2f}",
          ['model', 'unique params', 'logical params', 'peak RSS (MiB)', 'above import (MiB)'], rows)
    table(f"parameters as repeats are added ({mem_physical} physical blocks, n_embd={mem_n_embd})",
          ['logical layers', 'unique', 'logical', 'trainable', 'FLOPs/token'],
          [[n, f"{c['unique']:,}", f"{c['logical']:,}", f"{c['trainable']:,}", f"{c['flops_per_token']:.3g}"]
           for n, c in counts.items()])

if 'loss' in sections:
    # same init, same batches per mode and seed; loss = mean of the last 20 steps' training loss, then
    # a fp32 eval on 8 fixed batches (the same for every run). The second seed shows the noise.
    say(f"loss: {loss_iters} steps per mode and seed")
    evalb = batches(8, seed + 1)
    res, rows = {}, []
    runs = [(m, s) for s in (seed, seed + 1) for m in mode_list]
    for m, s in runs:
        say(f"  {m}, seed {s}")
        torch.manual_seed(s)
        model = GPT(GPTConfig(**model_args))
        step = trainer(model, m)
        trainb = batches(loss_iters, s + 1000)
        losses, t0 = [], time.perf_counter()
        for b in trainb:
            losses.append(step(b).item())
        dt = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            val = statistics.mean(model(x, y)[1].item() for x, y in evalb)
        key = m if s == seed else f"{m} (seed {s})"
        res[key] = dict(train_loss=statistics.mean(losses[-20:]), eval_loss=val, seconds=dt)
        rows.append([key, f"{res[key]['train_loss']:.4f}", f"{val:.4f}", f"{dt:.1f}"])
    results['loss'] = dict(iters=loss_iters, runs=res)
    table(f"loss after {loss_iters} steps ({'data ' + data_dir if data_dir else 'synthetic bigram chain, floor ln 4 = 1.386'}); "
          f"two seeds (init and batches) per mode: differences between modes smaller than between seeds are noise",
          ['mode', 'train loss (last 20)', 'eval loss (fp32)', 'seconds (incl. compile)'], rows)

if 'nanogpt' in sections:
    # nanoGPT's train.py reads data/<dataset>/{train,val}.bin and meta.pkl and its configurator.py
    # relative to the working directory: give it a scratch one with links to the same bins.
    import pickle
    import re
    import tempfile
    scratch = tempfile.TemporaryDirectory(prefix='bench-nanogpt-')
    link_data = os.path.join(scratch.name, 'data', 'bench')
    os.makedirs(link_data)
    for split in ('train', 'val'):
        os.symlink(os.path.abspath(os.path.join(data_dir, f'{split}.bin')), os.path.join(link_data, f'{split}.bin'))
    with open(os.path.join(link_data, 'meta.pkl'), 'wb') as f:
        pickle.dump({'vocab_size': vocab_size}, f)
    os.symlink(os.path.abspath(os.path.join(nanogpt, 'configurator.py')), os.path.join(scratch.name, 'configurator.py'))
    def same(iters):  # the settings both programs get
        return dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, batch_size=batch_size,
                    bias=bias, dropout=float(dropout), learning_rate=float(learning_rate), weight_decay=float(weight_decay),
                    beta1=float(beta1), beta2=float(beta2), grad_clip=float(grad_clip), gradient_accumulation_steps=1,
                    max_iters=iters, lr_decay_iters=iters, warmup_iters=max(1, iters // 10), min_lr=float(learning_rate) / 10,
                    eval_interval=iters, eval_iters=side_eval_iters, log_interval=1, device='cpu', compile=side_compile,
                    always_save_checkpoint=False)
    env = dict(os.environ, **({'OMP_NUM_THREADS': str(threads)} if threads > 0 else {}))
    skip = min(5, side_iters // 5)  # first iterations: allocation, warm-up (and compilation)

    def children_cpu():
        u = resource.getrusage(resource.RUSAGE_CHILDREN)
        return u.ru_utime + u.ru_stime

    def run_nanogrow(out, iters):
        args = [f'--{k}={v}' for k, v in same(iters).items()] + [f'--data_dir={data_dir}', f'--dtype={side_dtype}',
                                                           f'--out_dir={out}', '--progress=False', f'--seed={seed}']
        p = subprocess.run([sys.executable, os.path.join(repo, 'train.py')] + args, cwd=repo, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"error: nanogrow's train.py failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
        records = [json.loads(l) for l in open(os.path.join(out, 'log.jsonl'))]
        ms = [tokens_per_iter / r['tok_per_sec'] * 1e3 for r in records if r.get('type') == 'train']
        val = [r['val_loss'] for r in records if r.get('type') == 'eval'][-1]
        dt = re.search(r'dtype (\w+)', p.stdout + p.stderr)
        return ms, val, dt.group(1) if dt else '?'

    def run_nanogpt(out, iters):
        args = [f'--{k}={v}' for k, v in same(iters).items()] + ['--dataset=bench', '--dtype=float32', f'--out_dir={out}']
        p = subprocess.run([sys.executable, os.path.abspath(os.path.join(nanogpt, 'train.py'))] + args,
                           cwd=scratch.name, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"error: nanoGPT's train.py failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
        ms = [float(t) for t in re.findall(r'^iter \d+: loss [\d.]+, time ([\d.]+)ms', p.stdout, re.M)]
        vals = re.findall(r'^step \d+: train loss [\d.]+, val loss ([\d.]+)', p.stdout, re.M)
        if not ms or not vals:
            sys.exit("error: could not read iteration times and val loss from nanoGPT's output")
        return ms, float(vals[-1]), 'float32'

    programs = {'nanogrow': run_nanogrow, 'nanoGPT': run_nanogpt}
    runs = {k: [] for k in programs}
    load_before = os.getloadavg()
    for r in range(side_rounds):
        for name, run in programs.items():
            say(f"nanogpt: round {r + 1}/{side_rounds}, {name}'s train.py, {side_iters} iterations")
            t0, c0 = time.perf_counter(), children_cpu()
            ms, val, dt = run(os.path.join(scratch.name, f'out-{name}-{r}'), side_iters)
            entry = dict(ms_per_iter=statistics.median(ms[skip:]), val_loss=val, dtype=dt, seconds=time.perf_counter() - t0)
            if clock == 'cpu':  # CPU ms per iteration, robust to other load: the CPU time of a 2-iteration
                # run (start-up, data, the same two evals) subtracted from the full run's
                cpu_full, c0 = children_cpu() - c0, children_cpu()
                run(os.path.join(scratch.name, f'out-{name}-{r}-short'), 2)
                entry['ms_per_iter'] = (cpu_full - (children_cpu() - c0)) / (side_iters - 2) * 1e3
            runs[name].append(entry)
    load_after = os.getloadavg()
    scratch.cleanup()
    res, rows = {}, []
    for name, rs in runs.items():
        med = statistics.median(r['ms_per_iter'] for r in rs)
        res[name] = dict(ms_per_iter=med, tok_per_sec=tokens_per_iter / med * 1e3, runs=rs)
    ratio = res['nanoGPT']['ms_per_iter'] / res['nanogrow']['ms_per_iter']
    for name, rs in runs.items():
        rows.append([name, rs[0]['dtype'], f"{res[name]['ms_per_iter']:.1f}", f"{res[name]['tok_per_sec']:,.0f}",
                     ' / '.join(f"{r['ms_per_iter']:.1f}" for r in rs), ' / '.join(f"{r['val_loss']:.4f}" for r in rs),
                     f"{ratio:.2f}x" if name == 'nanogrow' else '1.00x'])
    results['nanogpt'] = dict(iters=side_iters, rounds=side_rounds, programs=res, speedup=ratio,
                              loadavg_before=load_before, loadavg_after=load_after)
    table(f"side by side with nanoGPT's train.py ({os.path.abspath(nanogpt)}): n_layer={n_layer} n_head={n_head} "
          f"n_embd={n_embd} block_size={block_size} batch_size={batch_size} bias={bias}, {side_iters} iterations per run, "
          f"val loss on {side_eval_iters} batches (each program's own eval); load average {load_before[0]:.1f} -> {load_after[0]:.1f}",
          ['program', 'dtype', f'ms/iter ({clock} clock)', 'tok/s', 'ms/iter per run', 'val loss per run', 'speed vs nanoGPT'], rows)

if 'profile' in sections:
    header, rows, totals = profile_summary
    results['profile'] = dict(totals, top=[dict(zip(header, r)) for r in rows])
    table(f"profile {profile_dir}: {totals['steps']} steps, {totals['ms_per_step']:.1f} ms of op self time per step, "
          f"{totals['gflop_per_step']:.3f} GFLOP per step ({totals['gflops']:.1f} GFLOP/s over the ops' time)", header, rows)

load = others_load(start)
results['machine']['others_load_during_run'] = load
if as_json:
    print(json.dumps(results))
elif load is not None:
    note = '' if load <= 10 else ' (too busy: wall-clock numbers unreliable)' if clock == 'wall' else ' (cpu clock: timings are this process\'s CPU time)'
    print(f"\nCPU used by other processes during the run: {load:.0f}%{note}")
