"""
Profile a window of training steps (train.py --profile=True) with torch.profiler: profile_start iterations run
first (start-up, allocations, compilation), one more is the profiler's warm-up, then profile_steps iterations
are recorded (an eval or growth step falling inside the window is recorded with them). out_dir/profile/ gets
  <host>_<pid>.<n>.pt.trace.json  the trace (CPU ops, and CUDA kernels on a GPU, with shapes and memory events):
                                  open it in https://ui.perfetto.dev or chrome://tracing, or TensorBoard's profiler
  ops.txt                         the per-op table: self and total time, calls, FLOPs, memory; by self time
  ops.json                        the same numbers for `python bench.py --only=profile --profile_dir=...`
  memory_snapshot.pickle          on CUDA only: the allocator's history over the window, for
                                  https://pytorch.org/memory_viz (drag the file in)
"""
import glob
import json
import os

import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler


def start_profile(out_dir, start, steps, device_type, say):
    """-> a started torch.profiler.profile; call .step() after every training iteration and .stop() at the end.
    The files are written when the window closes (say() names them). ValueError for a bad window."""
    for name, value, low in (('profile_start', start, 0), ('profile_steps', steps, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    cuda = device_type == 'cuda'
    os.makedirs(out_dir, exist_ok=True)

    def ready(prof):
        tensorboard_trace_handler(out_dir)(prof)
        table = prof.key_averages()
        by = 'self_device_time_total' if cuda else 'self_cpu_time_total'
        with open(os.path.join(out_dir, 'ops.txt'), 'w') as f:
            f.write(table.table(sort_by=by, row_limit=-1, max_name_column_width=60) + '\n')
        ops = [dict(name=e.key, calls=e.count, self_cpu_us=e.self_cpu_time_total, cpu_total_us=e.cpu_time_total,
                    self_device_us=e.self_device_time_total, device_total_us=e.device_time_total, flops=e.flops,
                    self_cpu_memory_bytes=e.self_cpu_memory_usage, self_device_memory_bytes=e.self_device_memory_usage)
               for e in table]
        with open(os.path.join(out_dir, 'ops.json'), 'w') as f:
            json.dump(dict(steps=steps, device_type=device_type, ops=ops), f)
        written = [max(glob.glob(os.path.join(out_dir, '*.pt.trace.json')), key=os.path.getmtime), 'ops.txt', 'ops.json']
        if cuda:
            torch.cuda.memory._dump_snapshot(os.path.join(out_dir, 'memory_snapshot.pickle'))
            torch.cuda.memory._record_memory_history(enabled=None)
            written.append('memory_snapshot.pickle')
        say(f"profile: {steps} steps in {out_dir}: " + ', '.join(os.path.basename(w) for w in written))

    if cuda:  # documented in https://pytorch.org/docs/stable/torch_cuda_memory.html
        torch.cuda.memory._record_memory_history(max_entries=100_000)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities, schedule=schedule(wait=start, warmup=1, active=steps, repeat=1),
                   on_trace_ready=ready, record_shapes=True, profile_memory=True, with_flops=True)
    prof.start()
    return prof


def summary(profile_dir, top=15):
    """ops.json of a profile directory -> (header, rows, totals): the `top` ops by self time (device time on a
    GPU), each with its share of the total, calls, ms per step, GFLOP per step and GFLOP/s, self memory.
    ValueError if the directory holds no ops.json."""
    path = os.path.join(profile_dir, 'ops.json')
    try:
        with open(path) as f:
            prof = json.load(f)
        steps, ops, device = prof['steps'], prof['ops'], prof['device_type']
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a profile of train.py --profile=True ({e})") from None
    time_key = 'self_device_us' if device == 'cuda' else 'self_cpu_us'
    mem_key = 'self_device_memory_bytes' if device == 'cuda' else 'self_cpu_memory_bytes'
    ops = [o for o in ops if not o['name'].startswith('ProfilerStep')]  # the step markers span everything
    total_us = sum(o[time_key] for o in ops) or 1.0
    rows = []
    for o in sorted(ops, key=lambda o: -o[time_key])[:top]:
        ms = o[time_key] / 1e3 / steps
        gflop = o['flops'] / 1e9 / steps
        rows.append([o['name'], f"{100 * o[time_key] / total_us:.1f}%", o['calls'] // steps, f"{ms:.2f}",
                     f"{gflop:.3f}" if o['flops'] else '', f"{gflop / ms * 1e3:.1f}" if o['flops'] and ms else '',
                     f"{o[mem_key] / 2**20 / steps:.1f}"])
    header = ['op', 'self time', 'calls/step', f'self {device} ms/step', 'GFLOP/step', 'GFLOP/s', 'self MiB/step']
    flops = sum(o['flops'] for o in ops)
    totals = dict(steps=steps, ms_per_step=total_us / 1e3 / steps, gflop_per_step=flops / 1e9 / steps,
                  gflops=flops / total_us / 1e3)
    return header, rows, totals
