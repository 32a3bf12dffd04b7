"""A stand-in for train.py in tests/test_study.py: takes train.py-style arguments (a config file, --key=value),
appends its command line and OMP_NUM_THREADS to out_dir/calls.jsonl, writes last.pt at once and at the end a
synthetic log.jsonl (loss = 2 + 2 exp(-flops * speed / (10 + seed)); appended to, as train.py does, unless resuming),
and stops on SIGTERM/SIGINT with last.pt saved, as train.py does. --fail=N exits N after an `error:` line; FAKE_TRAIN_SLEEP
seconds (or --sleep=S, unless resuming) pass before the log."""
import json
import math
import os
import signal
import sys
import time

args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--'))
out_dir, seed = args['out_dir'], int(args['seed'])
os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, 'calls.jsonl'), 'a') as f:
    f.write(json.dumps({'argv': sys.argv[1:], 'omp': os.environ.get('OMP_NUM_THREADS'), 'pid': os.getpid()}) + '\n')
last = os.path.join(out_dir, 'last.pt')
if args.get('init_from') == 'resume' and not os.path.exists(last):
    sys.exit(f"error: {last} not found")
if 'fail' in args:
    print("error: told to fail", file=sys.stderr)
    sys.exit(int(args['fail']))


def stop(signum, frame):
    with open(last, 'w') as f:
        f.write(f"saved on signal {signum}")
    print(f"stopped; resume with --init_from=resume --out_dir={out_dir}", file=sys.stderr)
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
with open(last, 'w') as f:
    f.write('checkpoint')
resuming = args.get('init_from') == 'resume'
time.sleep(float(args['sleep'] if 'sleep' in args and not resuming else os.environ.get('FAKE_TRAIN_SLEEP', 0)))
speed = float(args.get('speed', 1))
with open(os.path.join(out_dir, 'log.jsonl'), 'w' if args.get('init_from') == 'resume' else 'a') as f:
    for i, flops in enumerate(range(0, 101, 10)):
        loss = 2 + 2 * math.exp(-flops * speed / (10 + seed))
        f.write(json.dumps({'type': 'eval', 'iter': i, 'tokens': 100 * flops, 'flops': flops, 'train_loss': loss,
                            'val_loss': loss, 'lr': 1e-3, 'elapsed': flops / 10}) + '\n')
print(f"trained {out_dir}")
