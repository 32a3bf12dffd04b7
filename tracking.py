"""
Experiment tracking beside train.py's log (out_dir/log.jsonl stays the source of truth: compare.py, study.py and
resume read only it). With wandb_log=True every record the log gets also goes to Weights & Biases (project
wandb_project, run wandb_run_name; WANDB_MODE=offline writes out_dir/wandb/ without a network, `wandb sync` uploads
it later), with tensorboard_log=True to TensorBoard (out_dir/tensorboard: `tensorboard --logdir out_dir`).

One key per concept, at step = the record's iteration: the counters every record carries (tokens, flops, elapsed,
lr) under their own names; everything else as <record type>/<field> (train/loss, eval/val_loss, grow/params_after,
model/params_unique, ...); text fields (a growth step's method and options) as text. A resumed run logs the
iterations after its checkpoint again (the log drops them; a tracker keeps both).
"""
import atexit
import importlib.util
import json
import os

COUNTERS = ('tokens', 'flops', 'elapsed', 'lr')


def entries(record):
    """-> (step, {key: number}, {key: text}) for one log record."""
    numbers, texts = {}, {}
    for field, value in record.items():
        if field in ('type', 'iter') or value is None:
            continue
        key = field if field in COUNTERS else f"{record['type']}/{field}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers[key] = value
        else:
            texts[key] = value if isinstance(value, str) else json.dumps(value)
    return record['iter'], numbers, texts


def open_trackers(out_dir, config, wandb_log, tensorboard_log, wandb_project, wandb_run_name):
    """-> a function sending one log record to every tracker asked for, or None if none is. ValueError if a
    tracker's package is not installed (checked before anything is created). Trackers close at exit."""
    for on, package in ((wandb_log, 'wandb'), (tensorboard_log, 'tensorboard')):
        if on and importlib.util.find_spec(package) is None:
            raise ValueError(f"{package}_log=True needs the {package} package: pip install {package} "
                             "(requirements-dev.txt)")
    sinks = []
    if wandb_log:
        import wandb
        run = wandb.init(project=wandb_project, name=wandb_run_name or os.path.basename(os.path.abspath(out_dir)),
                         dir=out_dir, config=config)

        def to_wandb(step, numbers, texts):
            run.log({**numbers, **texts}, step=step)
        sinks.append(to_wandb)
        atexit.register(run.finish)
    if tensorboard_log:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(out_dir, 'tensorboard'))

        def to_tensorboard(step, numbers, texts):
            for key, value in numbers.items():
                writer.add_scalar(key, value, step)
            for key, value in texts.items():
                writer.add_text(key, value, step)
        sinks.append(to_tensorboard)
        atexit.register(writer.close)
    if not sinks:
        return None

    def track(record):
        step, numbers, texts = entries(record)
        for sink in sinks:
            sink(step, numbers, texts)
    return track
