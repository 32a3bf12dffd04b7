"""train.py on a tiny char dataset and tiny models, run as a subprocess as users run it: logs,
checkpoints, exact resume (also across growth steps), DDP, signals, compile, one-line errors."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint import build_model, load_checkpoint, run_checkpoint
from conftest import require

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}  # tiny models: one thread is faster, and far faster on a busy machine
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=4',
        '--gradient_accumulation_steps=2', '--eval_iters=3', '--eval_interval=4', '--max_iters=8',
        '--warmup_iters=2', '--lr_decay_iters=8', '--learning_rate=3e-3', '--dropout=0.1', '--progress=False']


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """A char-level dataset with some structure: words drawn from a small lexicon."""
    d = tmp_path_factory.mktemp('data')
    words = 'the quick brown fox jumps over a lazy dog while seven wizards quietly hex bold jackals'.split()
    rng = np.random.default_rng(0)
    text = ' '.join(rng.choice(words, 6000)) + '\n'
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], dtype=np.uint16)
    n = int(len(ids) * 0.9)
    ids[:n].tofile(d / 'train.bin')
    ids[n:].tofile(d / 'val.bin')
    meta = dict(tokenizer='char', vocab_size=len(chars), dtype='uint16', chars=chars, path=None, eot=None, bos=None,
                train_tokens=n, val_tokens=len(ids) - n, source='test')
    (d / 'meta.json').write_text(json.dumps(meta))
    return d


def train(repo, data, out_dir, *args, cmd=(sys.executable, 'train.py'), check=True, env=()):
    p = subprocess.run([*cmd, f'--data_dir={data}', f'--out_dir={out_dir}', *TINY, *args],
                       cwd=repo, env={**ENV, **dict(env)}, capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def records(out_dir, kind=None):
    rs = [json.loads(line) for line in open(os.path.join(out_dir, 'log.jsonl'))]
    return [r for r in rs if kind in (None, r['type'])]


def losses(out_dir):
    return [(r['type'], r['iter'], r['loss'] if r['type'] == 'train' else r['val_loss'])
            for r in records(out_dir) if r['type'] in ('train', 'eval')]


@pytest.fixture(scope='module')
def straight(data, tmp_path_factory):
    """One uninterrupted 8-iteration run, the reference for resume and DDP."""
    out = tmp_path_factory.mktemp('straight')
    train(REPO, data, out)
    return out


@pytest.fixture(scope='module')
def half(data, tmp_path_factory):
    """The same run stopped after 4 iterations: out_dir/last.pt is a checkpoint at iter 4."""
    out = tmp_path_factory.mktemp('half')
    train(REPO, data, out, '--max_iters=4')
    return out


def copy_run(src, dst):
    for name in ('last.pt', 'log.jsonl'):
        shutil.copy(src / name, dst / name)


# -----------------------------------------------------------------------------
# command-line errors


def test_bad_cli_is_one_line_error(repo):
    p = subprocess.run([sys.executable, 'train.py', '--lerning_rate=1e-3'], cwd=repo, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "error: unknown config key 'lerning_rate' on the command line (did you mean 'learning_rate'?)" in p.stderr


def test_bad_data_path_is_one_line_error(repo, tmp_path):
    p = subprocess.run([sys.executable, 'train.py', f'--data_dir={tmp_path}/nope', f'--out_dir={tmp_path}/out'],
                       cwd=repo, capture_output=True, text=True, timeout=60)
    lines = p.stderr.strip().splitlines()  # diagnostics (the config echo) may come first; one error, last
    assert p.returncode != 0 and lines[-1].startswith('error:') and 'train.bin not found' in lines[-1], p.stderr
    assert sum(l.startswith('error:') for l in lines) == 1 and 'Traceback' not in p.stderr

# -----------------------------------------------------------------------------
# training runs


def test_init_loss_is_ln_vocab(straight, data):
    vocab = json.loads((data / 'meta.json').read_text())['vocab_size']
    first = records(straight, 'eval')[0]
    assert first['iter'] == 0 and abs(first['val_loss'] - math.log(vocab)) < 0.1
    assert records(straight, 'eval')[-1]['val_loss'] < first['val_loss'] - 0.15  # and it learns


def test_log_and_checkpoint_contents(straight):
    r = records(straight, 'train')[-1]
    assert set(r) == {'type', 'iter', 'tokens', 'flops', 'loss', 'lr', 'tok_per_sec', 'mfu', 'elapsed'}
    assert set(records(straight, 'eval')[-1]) == {'type', 'iter', 'tokens', 'flops', 'train_loss', 'val_loss', 'lr', 'elapsed'}
    assert r['iter'] == 7 and r['tokens'] == 8 * 2 * 4 * 16
    ckpt = load_checkpoint(straight / 'last.pt')
    assert ckpt['iter_num'] == 8 and ckpt['tokens_seen'] == r['tokens'] and ckpt['flops_spent'] == r['flops']
    assert ckpt['config'] == json.loads((straight / 'config.json').read_text())
    assert ckpt['param_counts']['unique'] == sum(p.numel() for p in build_model(ckpt).parameters())
    assert (straight / 'best.pt').exists()


def test_resume_is_exact(repo, data, straight, half, tmp_path):
    copy_run(half, tmp_path)
    train(repo, data, tmp_path, '--init_from=resume', '--max_iters=8')
    assert losses(tmp_path) == losses(straight)  # bit-identical, dropout included


def test_ddp_matches_single_process(repo, data, straight, tmp_path):
    torchrun = (sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py')
    train(repo, data, tmp_path, cmd=torchrun)
    got, want = losses(tmp_path), losses(straight)
    assert [g[:2] for g in got] == [w[:2] for w in want]
    for g, w in zip(got, want):
        assert abs(g[2] - w[2]) <= 1e-4 * abs(w[2]), (g, w)


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(repo, data, half, tmp_path):
    copy_run(half, tmp_path)
    before = (tmp_path / 'last.pt').read_bytes()
    p = train(repo, data, tmp_path, '--init_from=resume', '--max_iters=40', '--learning_rate=1e9', '--grad_clip=0.0',
              '--decay_lr=False', check=False)
    assert p.returncode != 0 and 'non-finite' in p.stderr, p.stderr[-2000:]
    assert (tmp_path / 'last.pt').read_bytes() == before


def test_sigterm_saves_a_checkpoint_that_resumes_the_uninterrupted_run(repo, data, tmp_path):
    long = ['--max_iters=100000', '--eval_interval=100000', '--lr_decay_iters=100000']
    cmd = [sys.executable, 'train.py', f'--data_dir={data}', f'--out_dir={tmp_path / "a"}', *TINY, *long]
    p = subprocess.Popen(cmd, cwd=repo, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / 'a' / 'log.jsonl').exists() or not records(tmp_path / 'a', 'train'):
        assert p.poll() is None and time.time() < deadline, p.stderr.read() if p.poll() is not None else 'timeout'
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    stopped = load_checkpoint(tmp_path / 'a' / 'last.pt')['iter_num']
    assert stopped >= 1
    end = f'--max_iters={stopped + 2}'
    train(repo, data, tmp_path / 'a', '--init_from=resume', *long, end)
    train(repo, data, tmp_path / 'b', *long, end)
    assert losses(tmp_path / 'a') == losses(tmp_path / 'b')  # bit-identical to the run that was never stopped


def test_compile_equals_eager(repo, data, tmp_path):
    short = ['--max_iters=2', '--eval_iters=1', '--dropout=0.0']  # compiled dropout draws other masks: none here
    p = train(repo, data, tmp_path / 'compiled', '--compile=True', *short)
    if 'torch.compile failed' in p.stderr:
        reason = p.stderr.split('torch.compile failed')[1].splitlines()[0]
        if os.environ.get('CI') == 'true':
            pytest.fail(f"CI=true but torch.compile fell back to eager: {reason}")
        pytest.skip(f"torch.compile is unavailable here (train.py fell back to eager): {reason}")
    train(repo, data, tmp_path / 'eager', *short)
    got, want = losses(tmp_path / 'compiled'), losses(tmp_path / 'eager')
    assert [g[:2] for g in got] == [w[:2] for w in want] and len(records(tmp_path / 'compiled', 'train')) == 2
    for g, w in zip(got, want):  # the same batches and schedule: only the order of float operations differs
        assert abs(g[2] - w[2]) <= 1e-4 * abs(w[2]), (g, w)


def test_compile_failure_falls_back_to_eager(repo, data, tmp_path):
    env = {'CXX': '/bin/false', 'TORCHINDUCTOR_CACHE_DIR': str(tmp_path / 'inductor')}  # inductor cannot build kernels
    p = train(repo, data, tmp_path, '--compile=True', '--max_iters=1', '--eval_iters=1', env=env)
    if 'torch.compile failed' not in p.stderr:
        pytest.skip('could not make torch.compile fail with CXX=/bin/false here')
    assert len(records(tmp_path, 'train')) == 1


def grow_records(out_dir):
    return [{k: v for k, v in r.items() if k != 'elapsed'} for r in records(out_dir, 'grow')]


def test_grow_in_run_and_resume_across_growth(repo, data, tmp_path):
    grow = ['--grow_at_iter=4', '--grow_method=stack', '--max_iters=8']
    train(repo, data, tmp_path / 'a', *grow)
    g = grow_records(tmp_path / 'a')
    assert len(g) == 1 and (g[0]['iter'], g[0]['n_layer_before'], g[0]['n_layer_after']) == (4, 2, 4)
    assert g[0]['params_after'] > g[0]['params_before']
    assert records(tmp_path / 'a', 'train')[4]['lr'] == records(tmp_path / 'a', 'train')[0]['lr']  # warmup restarted
    assert load_checkpoint(tmp_path / 'a' / 'last.pt')['model_args']['n_layer'] == 4
    # the growth step logs the small model's loss, then the grown model's; best.pt follows the grown model
    at_growth = [r for r in records(tmp_path / 'a', 'eval') if r['iter'] == 4]
    assert len(at_growth) == 2 and at_growth[0]['flops'] == at_growth[1]['flops']
    assert load_checkpoint(tmp_path / 'a' / 'best.pt')['model_args']['n_layer'] == 4
    train(repo, data, tmp_path / 'b', *grow, '--max_iters=6')
    train(repo, data, tmp_path / 'b', '--init_from=resume', '--max_iters=8')
    assert grow_records(tmp_path / 'b') == g  # grown once, not again on resume
    assert [r for r in losses(tmp_path / 'b') if r[:2] != ('eval', 6)] == losses(tmp_path / 'a')


def test_several_growth_steps_resume_exactly_across_each(repo, data, tmp_path):
    steps = "--grow_steps=[{'iter': 3, 'method': 'stack'}, {'iter': 6, 'method': 'interleave', 'options': {'noise': 0.01}}]"
    extra = [steps, '--max_iters=9', '--eval_interval=3', '--grow_optimizer=carry', '--grow_lr=continue']
    train(repo, data, tmp_path / 'a', *extra)
    g = grow_records(tmp_path / 'a')
    assert [(r['iter'], r['method'], r['n_layer_before'], r['n_layer_after']) for r in g] == [(3, 'stack', 2, 4), (6, 'interleave', 4, 8)]
    models = records(tmp_path / 'a', 'model')  # the sizes at the start and after each growth, for compare.py
    assert [(r['iter'], r['n_layer'], r['n_logical']) for r in models] == [(0, 2, 2), (3, 4, 4), (6, 8, 8)]
    assert models[1]['params_unique'] > models[0]['params_unique'] == models[0]['params_trainable']
    lrs = {r['iter']: r['lr'] for r in records(tmp_path / 'a', 'train')}
    assert lrs[3] < lrs[2] and lrs[6] < lrs[5]  # one schedule over the whole run: no warm-up again
    for stop in (3, 6):  # saved at each growth step
        out = tmp_path / f'stop{stop}'
        train(repo, data, out, *extra, f'--max_iters={stop}')
        train(repo, data, out, '--init_from=resume', *extra)  # TINY sets eval_interval: set ours again
        assert grow_records(out) == g and records(out, 'model') == models  # logged once, not again on resume
        assert [r for r in losses(out) if r[:2] != ('eval', stop) or stop % 3 == 0] == losses(tmp_path / 'a')


def test_wsd_schedule_across_growth_and_resume(repo, data, tmp_path):
    """lr_schedule='wsd': warm-up, the peak held, one 1 - sqrt decay over the last decay_frac; with grow_lr='continue'
    a growth step inside the stable phase keeps the peak; with 'restart' the whole schedule starts again; resume is
    exact and the schedule is in the log and the saved config."""
    wsd = ['--lr_schedule=wsd', '--decay_frac=0.25', '--max_iters=12', '--lr_decay_iters=12', '--warmup_iters=2',
           '--eval_interval=3', '--min_lr=3e-4']
    train(repo, data, tmp_path / 'a', *wsd, '--grow_at_iter=6', '--grow_lr=continue')
    lrs = [r['lr'] for r in records(tmp_path / 'a', 'train')]
    peak, low = 3e-3, 3e-4
    assert lrs[:2] == pytest.approx([peak / 3, peak * 2 / 3])  # warm-up
    assert lrs[2:10] == pytest.approx([peak] * 8)  # stable, through the growth step at 6, until 12 * (1 - 0.25) = 9
    assert lrs[10:] == pytest.approx([low + (1 - math.sqrt(k / 3)) * (peak - low) for k in (1, 2)])
    schedule = records(tmp_path / 'a', 'schedule')
    assert [(r['lr_schedule'], r['decay_frac'], r['grow_lr']) for r in schedule] == [('wsd', 0.25, 'continue')]
    train(repo, data, tmp_path / 'b', *wsd, '--grow_at_iter=6', '--grow_lr=continue', '--max_iters=7')
    train(repo, data, tmp_path / 'b', '--init_from=resume', *wsd, '--grow_at_iter=6', '--grow_lr=continue')
    assert [r for r in losses(tmp_path / 'b') if r[:2] != ('eval', 7)] == losses(tmp_path / 'a')
    assert records(tmp_path / 'b', 'schedule') == schedule
    assert json.load(open(tmp_path / 'b' / 'config.json'))['lr_schedule'] == 'wsd'
    train(repo, data, tmp_path / 'c', *wsd, '--grow_at_iter=6', '--grow_lr=restart', '--lr_decay_iters=4')
    after = [r['lr'] for r in records(tmp_path / 'c', 'train')][6:]
    # warm-up again at the growth step, the peak held to round(4 * 0.75) = 3, decayed to min_lr at 4
    assert after == pytest.approx([peak / 3, peak * 2 / 3, peak, peak, low, low])
    for bad, msg in (('--lr_schedule=linear', "lr_schedule must be 'cosine' or 'wsd'"), ('--decay_frac=0', 'decay_frac'),
                     ('--decay_frac=0.95', 'would start inside the warm-up')):
        p = train(repo, data, tmp_path / 'd', *wsd, bad, check=False)
        assert p.returncode != 0 and p.stderr.strip().splitlines() == [p.stderr.strip()] and msg in p.stderr, p.stderr


def test_growth_schedule_is_checked_before_training(repo, data, tmp_path):
    for bad, msg in (("--grow_method=stakc", "unknown growth method 'stakc'"),
                     ("--grow_options={'factr': 2}", "option factr does not apply to method stack"),
                     ("--grow_steps=[{'iter': 4, 'method': 'stack'}, {'iter': 2, 'method': 'stack'}]", "increasing order")):
        p = train(repo, data, tmp_path, '--grow_at_iter=0' if 'grow_steps' in bad else '--grow_at_iter=4', bad, check=False)
        assert p.returncode != 0 and p.stderr.strip().splitlines() == [p.stderr.strip()] and msg in p.stderr, p.stderr
        assert not (tmp_path / 'log.jsonl').exists()


def test_fsdp_matches_single_process_across_growth_and_resumes_on_fewer_processes(repo, data, tmp_path):
    torchrun = lambda n: (sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}', 'train.py')
    grow = ['--grow_at_iter=4', '--grow_method=stack']
    train(repo, data, tmp_path / 'single', *grow)
    train(repo, data, tmp_path / 'fsdp', *grow, '--fsdp=True', '--max_iters=6', cmd=torchrun(2))
    assert (tmp_path / 'fsdp' / 'last.dcp' / '.metadata').is_file() and not (tmp_path / 'fsdp' / 'last.pt').exists()
    train(repo, data, tmp_path / 'fsdp', '--fsdp=True', '--init_from=resume', cmd=torchrun(1))  # resharded onto one process
    got, want = [r for r in losses(tmp_path / 'fsdp') if r[:2] != ('eval', 6)], losses(tmp_path / 'single')
    assert [g[:2] for g in got] == [w[:2] for w in want]
    for g, w in zip(got, want):  # reduce-scatter sums in another order, and where the kills land decides how many steps
        assert abs(g[2] - w[2]) <= 5e-3 * abs(w[2]), (g, w)  # ran on 2 processes: round-off grows (1.1e-3 seen)  # (a lost optimizer state or step is ~1e-2)
    from checkpoint import load_any
    ckpt = load_any(tmp_path / 'fsdp')  # the sharded checkpoint, gathered for the other scripts
    assert ckpt['iter_num'] == 8 and ckpt['model_args']['n_layer'] == 4
    assert build_model(ckpt).param_counts() == ckpt['param_counts']


def test_readme_torchrun_command(repo, data, tmp_path):
    """README's DDP command as written, with 2 processes (config/ts_base.py's gradient_accumulation_steps=1 is fewer than
    the processes: rounded up, with a note) and small overrides appended."""
    documented = 'torchrun --standalone --nproc_per_node=8 train.py config/ts_base.py'
    assert documented in (repo / 'README.md').read_text()
    torchrun = shutil.which('torchrun', path=str(Path(sys.executable).parent)) or shutil.which('torchrun')
    if torchrun is None:
        pytest.skip('no torchrun next to this python')
    cmd = [torchrun, *documented.replace('=8', '=2').split()[1:]]
    tiny = [a for a in TINY if not a.startswith('--gradient_accumulation_steps')]
    p = subprocess.run([*cmd, f'--data_dir={data}', f'--out_dir={tmp_path}', '--vocab_size=None', *tiny, '--max_iters=2', '--log_interval=1'],
                       cwd=repo, env=ENV, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert 'note: gradient_accumulation_steps=1 does not divide among 2 processes; using 1 per process' in p.stderr
    assert [r['iter'] for r in records(tmp_path, 'train')] == [0, 1] and p.stdout == ''


def test_ligo_inside_a_run_counts_the_operator_and_resumes_exactly(repo, data, tmp_path):
    grow = ['--grow_at_iter=4', '--grow_method=ligo', "--grow_options={'n_layer': 4, 'ligo_steps': 3}"]
    train(repo, data, tmp_path / 'a', *grow)
    g = grow_records(tmp_path / 'a')
    assert len(g) == 1 and (g[0]['method'], g[0]['n_layer_after']) == ('ligo', 4)
    before = [r for r in records(tmp_path / 'a', 'eval') if r['iter'] == 4][0]
    assert g[0]['operator_flops'] > 0 and g[0]['flops'] == before['flops'] + g[0]['operator_flops']
    assert g[0]['tokens'] == before['tokens'] + 3 * 4 * 16  # the operator's 3 batches of the run's stream
    train(repo, data, tmp_path / 'b', *grow, '--max_iters=6')
    train(repo, data, tmp_path / 'b', '--init_from=resume', '--max_iters=8')
    assert [r for r in losses(tmp_path / 'b') if r[:2] != ('eval', 6)] == losses(tmp_path / 'a')


def test_auto_dtype_is_bf16_where_the_cpu_computes_it(repo, data, tmp_path):
    p = train(repo, data, tmp_path, '--max_iters=4', env={'NANOGROW_CPU_BF16': 'on'})
    assert 'dtype bfloat16 (' in p.stderr, p.stderr[-2000:]
    ev = records(tmp_path, 'eval')
    assert all(math.isfinite(r['val_loss']) for r in ev) and ev[-1]['val_loss'] < ev[0]['val_loss']


def test_float16_resume_restores_the_grad_scaler(repo, data, tmp_path):
    """float16 autocast with a GradScaler, the path of GPUs without bf16 (T4, V100), here on the CPU: a run
    stopped and resumed continues with its scaler's state and equals the uninterrupted run."""
    f16 = ['--dtype=float16', '--device=cpu', '--lr_decay_iters=4', '--eval_interval=2']
    train(repo, data, tmp_path / 'a', *f16, '--max_iters=4')
    train(repo, data, tmp_path / 'b', *f16, '--max_iters=2')
    train(repo, data, tmp_path / 'b', *f16, '--max_iters=4', '--init_from=resume')
    assert losses(tmp_path / 'b') == losses(tmp_path / 'a')
    a, b = (load_checkpoint(tmp_path / run / 'last.pt')['scaler'] for run in 'ab')
    assert a['_growth_tracker'] == 4 and a['scale'] > 1  # enabled: 4 steps without an overflow since the start
    assert b == a


def test_sharded_run_survives_a_dead_rank_and_a_kill_during_a_save(repo, data, tmp_path):
    """FSDP on 2 processes (gloo) saving every iteration: rank 1 killed mid-run (torchrun then stops rank 0), and the
    whole job killed (SIGKILL) while it writes a sharded checkpoint. Each time the run resumes from the last complete
    last.dcp, on 2 processes and then on 1, never from a half-written one, and ends as the uninterrupted run does."""
    torchrun = lambda n: (sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}', 'train.py')
    every = ['--eval_interval=1', '--max_iters=12', '--lr_decay_iters=12']
    train(repo, data, tmp_path / 'single', *every)
    out, link = tmp_path / 'fsdp', tmp_path / 'fsdp' / 'last.dcp'

    def start(*args):  # its own process group: torchrun and its workers
        return subprocess.Popen([*torchrun(2), f'--data_dir={data}', f'--out_dir={out}', *TINY, *every, '--fsdp=True', *args],
                                cwd=repo, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def wait_for(done, p, what):
        deadline = time.time() + 120
        while not done():
            assert p.poll() is None and time.time() < deadline, f"the run ended or stalled before {what}"
            time.sleep(0.005)

    def saved_iter():
        return run_checkpoint(out)['iter_num']

    p = start()  # a rank dies mid-run, after two saves
    wait_for(lambda: link.is_symlink(), p, "its first save")
    first = os.readlink(link)
    wait_for(lambda: os.readlink(link) != first, p, "its second save")
    ranks = {}
    for child in Path(f'/proc/{p.pid}/task/{p.pid}/children').read_text().split():
        env = dict(kv.split('=', 1) for kv in Path(f'/proc/{child}/environ').read_text().split('\0') if '=' in kv)
        ranks[env.get('RANK')] = int(child)
    os.kill(ranks['1'], signal.SIGKILL)
    assert p.wait(timeout=120) != 0
    after_dead_rank = saved_iter()
    assert after_dead_rank >= 2

    p = start('--init_from=resume')  # the whole job killed while a save is in progress
    current = os.readlink(link)
    saving = lambda: [n for n in os.listdir(out) if n.startswith('last.dcp.') and n != os.readlink(link)]
    wait_for(lambda: os.readlink(link) != current and saving(), p, "a save to kill")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    half = out / 'last.dcp.999'  # and what a kill leaves at the start of a save, should the kill above finish it
    half.mkdir()
    (half / '__0_0.distcp').write_bytes(b'\0' * 100)
    assert saved_iter() > after_dead_rank

    train(repo, data, out, *every, '--fsdp=True', '--init_from=resume', cmd=torchrun(1))
    got, want = losses(out), losses(tmp_path / 'single')
    assert [g[:2] for g in got] == [w[:2] for w in want]  # no step lost or repeated in the log
    for g, w in zip(got, want):  # reduce-scatter sums in another order, and where the kills land decides how many steps
        assert abs(g[2] - w[2]) <= 5e-3 * abs(w[2]), (g, w)  # ran on 2 processes: round-off grows (1.1e-3 seen)
    assert saved_iter() == 12
    assert [n for n in os.listdir(out) if n.startswith('last.dcp.')] == [os.readlink(link)]  # the half ones removed


def test_growth_operator_runs_on_the_runs_device(repo, data, tmp_path):
    """train.py hands its device to the growth operator (grow.Run, which LiGO's and LESA's tensors follow:
    tests/test_grow.py): a shim around grow.grow records the Run it is given."""
    shim = ("import json, os, runpy, sys, grow\n"
            "real = grow.grow\n"
            "def spy(*a, run=None, **k):\n"
            "    open(os.environ['SPY'], 'w').write(json.dumps(run and [run.device, run.progress]))\n"
            "    return real(*a, run=run, **k)\n"
            "grow.grow = spy\n"
            "sys.argv = ['train.py', *sys.argv[1:]]\n"
            "runpy.run_path('train.py', run_name='__main__')\n")
    grow = ['--grow_at_iter=4', '--grow_method=ligo', "--grow_options={'n_layer': 4, 'ligo_steps': 1}", '--max_iters=5']
    train(repo, data, tmp_path, *grow, '--device=cpu', cmd=(sys.executable, '-c', shim), env={'SPY': str(tmp_path / 'run.json')})
    assert json.loads((tmp_path / 'run.json').read_text()) == ['cpu', False]  # TINY has --progress=False


def wandb_history(out_dir):
    """{(step, key): value} from an offline wandb run's transaction log (out_dir/wandb/offline-run-*/run-*.wandb):
    a 7-byte W&B header, then a LevelDB-style log (32 KiB blocks of chunks: crc32 (4 bytes), length (2), type (1:
    full, 2: first, 3: middle, 4: last)) of wandb's protobuf Records."""
    from wandb.proto import wandb_internal_pb2 as pb
    [path] = Path(out_dir).glob('wandb/offline-run-*/run-*.wandb')
    data, pos, parts, rows = path.read_bytes(), 7, b'', {}
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], 'little'), data[pos + 6]
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record.FromString(parts)
            parts = b''
            if record.WhichOneof('record_type') == 'history':
                for item in record.history.item:
                    key = item.key or '/'.join(item.nested_key)
                    if not key.startswith('_'):
                        rows[(record.history.step.num, key)] = json.loads(item.value_json)
    return rows


def test_trackers_get_every_log_record(repo, data, tmp_path):
    """wandb_log (offline) and tensorboard_log: every record of log.jsonl (model, train, eval, grow), read back
    with each tracker's own reader; a tracker asked for but not installed is a one-line error."""
    require('wandb')
    require('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tracking import entries
    train(repo, data, tmp_path, '--grow_at_iter=4', '--wandb_log=True', '--tensorboard_log=True',
          env={'WANDB_MODE': 'offline', 'WANDB_SILENT': 'true'})
    numbers, texts = [], []
    for r in records(tmp_path):
        step, n, t = entries(r)
        numbers += [(key, step, value) for key, value in n.items()]
        texts += [(key, step, value) for key, value in t.items()]
    kinds = {r['type'] for r in records(tmp_path)}
    assert kinds == {'schedule', 'model', 'train', 'eval', 'grow'} and ('grow/method', 4, 'stack') in texts
    assert {'train/loss', 'eval/val_loss', 'grow/params_after', 'model/params_unique', 'tokens', 'lr'} <= {k for k, *_ in numbers}

    tb = EventAccumulator(str(tmp_path / 'tensorboard'), size_guidance={'scalars': 0, 'tensors': 0})
    tb.Reload()
    got = sorted((key, e.step, e.value) for key in tb.Tags()['scalars'] for e in tb.Scalars(key))
    assert [(k, s) for k, s, _ in got] == sorted((k, s) for k, s, _ in numbers)
    want = sorted(numbers)
    assert all(abs(v - w[2]) <= 1e-6 * max(1.0, abs(w[2])) for (_, _, v), w in zip(got, want))  # float32 in TensorBoard
    assert {t.split('/text_summary')[0] for t in tb.Tags()['tensors']} == {k for k, *_ in texts}

    last = {(step, key): value for key, step, value in numbers + texts}  # wandb: one row per step, the last value wins
    assert wandb_history(tmp_path) == last

    shim = "import sys, runpy; sys.modules['wandb'] = None; sys.argv = ['train.py', *sys.argv[1:]]; runpy.run_path('train.py')"
    p = train(repo, data, tmp_path / 'missing', '--wandb_log=True', cmd=(sys.executable, '-c', shim), check=False)
    assert p.returncode != 0 and p.stderr.strip().splitlines()[-1].startswith('error: wandb_log=True needs the wandb package')


def test_profile_writes_a_trace_and_a_per_op_table_and_changes_no_number(repo, data, straight, tmp_path):
    """profile=True: a window of steps under torch.profiler -> a Chrome/Perfetto trace, the per-op table (time,
    FLOPs, memory) and ops.json, which bench.py summarises; the run's numbers are the unprofiled run's."""
    from profiling import summary
    p = train(repo, data, tmp_path, '--profile=True', '--profile_start=1', '--profile_steps=2')
    assert losses(tmp_path) == losses(straight)
    prof = tmp_path / 'profile'
    [trace] = prof.glob('*.pt.trace.json')
    events = json.loads(trace.read_text())['traceEvents']
    assert sum(e.get('name') == 'ProfilerStep#3' for e in events) == 1 and any(e.get('name') == 'aten::mm' for e in events)
    header = (prof / 'ops.txt').read_text().splitlines()[1]
    assert all(column in header for column in ('Self CPU %', 'CPU total', 'Self CPU Mem', '# of Calls', 'FLOPs'))
    ops = {o['name']: o for o in json.loads((prof / 'ops.json').read_text())['ops']}
    assert ops['aten::mm']['flops'] > 0 and ops['aten::mm']['self_cpu_us'] > 0 and ops['aten::mm']['calls'] > 0
    assert f"profile: 2 steps in {prof}" in p.stderr
    header, rows, totals = summary(prof)
    assert totals['steps'] == 2 and totals['gflop_per_step'] > 0 and len(rows) == 15 and 'aten::mm' in [r[0] for r in rows]
    b = subprocess.run([sys.executable, 'bench.py', '--only=profile', f'--profile_dir={prof}'], cwd=repo, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert b.returncode == 0 and '| aten::mm |' in b.stdout, b.stderr[-2000:]
    bad = train(repo, data, tmp_path / 'bad', '--profile=True', '--profile_steps=0', check=False)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == 'error: profile_steps must be an integer >= 1, got 0'
