"""study.py with a fake train.py (tests/fake_train.py, no training): every (arm, seed) runs, finished runs are
skipped, unfinished ones resume with --init_from=resume, a changed command is an error unless --force, a failure
is reported while the others go on, two jobs run with one thread each, Ctrl-C leaves the runs resumable, and the
per-run summary CSV comes out at the end. Arms built from other arms' runs wait for them and run their pre-steps
(`before`) first, skipping those whose output exists; a failing pre-step fails the run before train.py starts."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE = f"{sys.executable} {os.path.join(REPO, 'tests', 'fake_train.py')}"
ARMS = {'scratch': {}, 'fast': {'speed': 2.0}}


def write_study(root, arms=ARMS, seeds=(1, 2), **extra):
    (root / 'base.py').write_text("# a train.py config file\n")
    lines = ["name = 'demo'", "base = 'base.py'", f"seeds = {list(seeds)}", "losses = [2.5]", f"arms = {arms!r}"]
    (root / 'demo.py').write_text('\n'.join(lines + [f"{k} = {v!r}" for k, v in extra.items()]) + '\n')


def call(root, monkeypatch, capsys, *args):
    """study.py in-process in root -> (exit code or error message, stdout)."""
    monkeypatch.chdir(root)
    capsys.readouterr()
    try:
        study.main(['demo.py', '--train', FAKE, *args])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().out


def calls(root, arm, seed):
    path = root / 'runs' / 'demo' / arm / f's{seed}' / 'calls.jsonl'
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def summary(root):
    with open(root / 'results' / 'demo.csv', newline='') as f:
        return list(csv.DictReader(f))


def test_runs_every_arm_and_seed_then_skips_them(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    write_study(tmp_path)
    code, out = call(tmp_path, monkeypatch, capsys, '--jobs', '2')
    assert code == 0, out
    for arm in ARMS:
        for seed in (1, 2):
            [c] = calls(tmp_path, arm, seed)
            expected = ['base.py', f'--out_dir=runs/demo/{arm}/s{seed}', f'--seed={seed}']
            assert c['argv'] == expected + (['--speed=2.0'] if arm == 'fast' else []) and c['omp'] == '1'
            done = json.loads((tmp_path / 'runs' / 'demo' / arm / f's{seed}' / 'done.json').read_text())
            assert done['returncode'] == 0 and done['args'] == c['argv'] and done['command'][-len(c['argv']):] == c['argv']
            assert 'trained' in (tmp_path / 'runs' / 'demo' / arm / f's{seed}' / 'train.log').read_text()
    rows = summary(tmp_path)
    assert [(r['arm'], r['seed']) for r in rows] == [('scratch', '1'), ('scratch', '2'), ('fast', '1'), ('fast', '2')]
    assert all(float(r['sp@final']) > 0.5 for r in rows if r['arm'] == 'fast')  # twice as fast: sp = +100% at the end
    assert '| fast (sp) |' in out and (tmp_path / 'results' / 'demo.png').exists()
    assert 'runs: 1 done, 1 running, 2 to go, ETA ~' in out and 'runs: 4 done, 0 running, 0 to go, ETA ~0 min' in out

    (tmp_path / 'results' / 'demo.csv').unlink()
    code, out = call(tmp_path, monkeypatch, capsys, '--jobs', '1')  # all finished: nothing runs again
    assert code == 0 and '4 done (skipped), 0 to run' in out
    assert all(len(calls(tmp_path, a, s)) == 1 for a in ARMS for s in (1, 2)) and len(summary(tmp_path)) == 4
    (tmp_path / 'results' / 'demo.csv').unlink()
    code, out = call(tmp_path, monkeypatch, capsys, '--table')
    assert code == 0 and len(summary(tmp_path)) == 4


def test_eta_counts_each_run_at_its_arms_recorded_mean():
    walls = {'a': [10.0, 20.0], 'b': [100.0]}
    running = [{'arm': 'b', 't0': time.time() - 30}]  # 70 s left of b's 100
    left = study.eta([{'arm': 'a'}, {'arm': 'new'}], running, walls, jobs=2)  # a: 15 s, an untimed arm: the mean 130/3
    assert left == pytest.approx((15 + 130 / 3 + 70) / 2, abs=0.5)
    assert study.eta([{'arm': 'a'}], [], {}, jobs=1) is None


def test_resumes_unfinished_runs_and_restarts_runs_without_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    write_study(tmp_path, arms={'scratch': {}})
    s1, s2 = tmp_path / 'runs' / 'demo' / 'scratch' / 's1', tmp_path / 'runs' / 'demo' / 'scratch' / 's2'
    s1.mkdir(parents=True)
    s2.mkdir(parents=True)
    (s1 / 'last.pt').write_text('checkpoint')  # stopped after a checkpoint
    (s2 / 'log.jsonl').write_text('{"stale": "from an attempt that died before its first checkpoint"}\n')
    code, out = call(tmp_path, monkeypatch, capsys)
    assert code == 0, out
    assert 'resume scratch/s1' in out and 'start  scratch/s2' in out
    [c1], [c2] = calls(tmp_path, 'scratch', 1), calls(tmp_path, 'scratch', 2)
    assert c1['argv'][-1] == '--init_from=resume' and not any('init_from' in a for a in c2['argv'])
    assert c1['omp'] is None  # one job: the thread count is left alone
    assert 'stale' not in (s2 / 'log.jsonl').read_text() and len(summary(tmp_path)) == 2


def test_a_changed_command_is_an_error_unless_force(tmp_path, monkeypatch, capsys):
    write_study(tmp_path, seeds=[1])
    assert call(tmp_path, monkeypatch, capsys)[0] == 0
    write_study(tmp_path, arms={'scratch': {}, 'fast': {'speed': 3.0}}, seeds=[1])  # fast's overrides edited
    code, out = call(tmp_path, monkeypatch, capsys)
    assert isinstance(code, str) and code.startswith('error:') and '\n' not in code
    assert 'fast/s1' in code and 'scratch/s1' not in code and '--force' in code
    assert len(calls(tmp_path, 'fast', 1)) == 1  # nothing ran
    code, out = call(tmp_path, monkeypatch, capsys, '--dry_run')
    assert code == 0 and 'changed  fast/s1' in out and 'done     scratch/s1' in out
    code, out = call(tmp_path, monkeypatch, capsys, '--force')
    assert code == 0, out
    [c] = calls(tmp_path, 'fast', 1)  # started afresh: the old out_dir went
    assert c['argv'][-1] == '--speed=3.0'
    assert len(calls(tmp_path, 'scratch', 1)) == 1
    (tmp_path / 'base.py').write_text("# the base config, edited\n")  # so is a changed base config
    code, _ = call(tmp_path, monkeypatch, capsys)
    assert isinstance(code, str) and 'fast/s1' in code and 'scratch/s1' in code


def test_a_failed_run_is_reported_and_the_others_go_on(tmp_path, monkeypatch, capsys):
    write_study(tmp_path, arms={'scratch': {}, 'bad': {'fail': 3}})
    code, out = call(tmp_path, monkeypatch, capsys, '--jobs', '2')
    assert code == 1
    assert 'FAILED bad/s1: exit 3: error: told to fail' in out and '2 run(s) failed: bad/s1, bad/s2' in out
    assert not (tmp_path / 'runs' / 'demo' / 'bad' / 's1' / 'done.json').exists()
    assert all((tmp_path / 'runs' / 'demo' / 'scratch' / f's{s}' / 'done.json').exists() for s in (1, 2))
    assert [r['arm'] for r in summary(tmp_path)] == ['scratch', 'scratch']  # the table of what finished


def test_ctrl_c_stops_the_runs_resumably(tmp_path, monkeypatch, capsys):
    write_study(tmp_path)
    env = {**os.environ, 'FAKE_TRAIN_SLEEP': '120'}
    p = subprocess.Popen([sys.executable, os.path.join(REPO, 'study.py'), 'demo.py', '--jobs', '2', '--train', FAKE],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even if pytest runs in `... &`
    deadline = time.time() + 60
    while time.time() < deadline and not all(
            (tmp_path / 'runs' / 'demo' / 'scratch' / f's{s}' / 'last.pt').exists() for s in (1, 2)):
        time.sleep(0.2)
    pids = [calls(tmp_path, 'scratch', s)[0]['pid'] for s in (1, 2)]  # two running at once
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out
    assert 'resuming scratch/s1, scratch/s2' in out
    for s in (1, 2):  # each was stopped as train.py stops on SIGTERM (saving last.pt), not killed
        assert (tmp_path / 'runs' / 'demo' / 'scratch' / f's{s}' / 'last.pt').read_text() == f"saved on signal {int(signal.SIGTERM)}"
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not list((tmp_path / 'runs').rglob('done.json')) and not (tmp_path / 'runs' / 'demo' / 'fast').exists()
    code, out = call(tmp_path, monkeypatch, capsys, '--jobs', '2')
    assert code == 0, out
    assert [c['argv'][-1] for c in calls(tmp_path, 'scratch', 1)] == ['--seed=1', '--init_from=resume']
    assert len(list((tmp_path / 'runs').rglob('done.json'))) == 4


def test_dry_run_only_and_bad_study_files(tmp_path, monkeypatch, capsys):
    write_study(tmp_path)
    code, out = call(tmp_path, monkeypatch, capsys, '--dry_run', '--only', 'fast')
    assert code == 0 and not (tmp_path / 'runs').exists()
    assert out.splitlines() == [f"start    fast/s{s}: {FAKE} base.py --out_dir=runs/demo/fast/s{s} --seed={s} --speed=2.0"
                                for s in (1, 2)]
    code, _ = call(tmp_path, monkeypatch, capsys, '--only', 'fats')
    assert code.startswith('error:') and "'fats'" in code
    cases = [(dict(arms={'fast': {}}), "scratch='scratch' is not an arm"),
             (dict(arms={'scratch': {'seed': 3}}), 'sets seed'),
             (dict(arms={'scratch': {}, 'a/b': {}}), "'a/b'"),
             (dict(seeds=[1, 1]), 'distinct'),
             (dict(typo=1), "unknown key 'typo'"),
             (dict(arms={'scratch': {'after': ['nope']}}), 'after must be a list of other arms'),
             (dict(arms={'scratch': {'after': ['b']}, 'b': {'after': ['scratch']}}), 'cycle: scratch -> b -> scratch'),
             (dict(arms={'scratch': {'before': ['python make.py']}}), 'before must be a list of (output file, command)'),
             (dict(arms={'scratch': {'seeds': [1, 1]}}), "arm 'scratch': seeds must be distinct ints"),
             (dict(arms={'scratch': {'seeds': [1]}, 'b': {'after': ['scratch']}}), "needs 'scratch', which has no seed 2")]
    for kw, needle in cases:
        write_study(tmp_path, **kw)
        code, _ = call(tmp_path, monkeypatch, capsys)
        assert isinstance(code, str) and code.startswith('error:') and '\n' not in code and needle in code, (kw, code)
    write_study(tmp_path, arms={'scratch': {'seeds': [1, 2, 3]}, 'fast': {'speed': 2.0}}, seeds=[1])  # arm's own seeds
    code, out = call(tmp_path, monkeypatch, capsys, '--dry_run')
    assert code == 0 and [line.split(':')[0] for line in out.splitlines()] == [
        'start    scratch/s1', 'start    scratch/s2', 'start    scratch/s3', 'start    fast/s1']
    write_study(tmp_path)
    (tmp_path / 'base.py').unlink()
    code, _ = call(tmp_path, monkeypatch, capsys)
    assert code.startswith('error:') and 'base.py not found' in code
    assert not (tmp_path / 'runs').exists()


COPY = "python -c 'import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])'"  # fails unless the source exists
GROWN = {'scratch': {}, 'small': {'speed': 0.5},
         'grown': {'after': ['small'], 'init_from': '{run}/init.pt',  # small's done.json as its "grown checkpoint"
                   'before': [('{run}/init.pt', COPY + ' {runs}/small/s{seed}/done.json {run}/init.pt')]}}


def test_arms_wait_for_the_runs_they_need_and_skip_finished_pre_steps(tmp_path, monkeypatch, capsys):
    write_study(tmp_path, arms={'grown': GROWN['grown'], 'scratch': {}, 'small': GROWN['small']})  # grown listed first
    code, out = call(tmp_path, monkeypatch, capsys, '--dry_run', '--only', 'grown')  # takes small along
    assert code == 0 and [line.split(':')[0] for line in out.splitlines() if not line.startswith(' ')] == [
        'start    small/s1', 'start    small/s2', 'start    grown/s1', 'start    grown/s2']
    assert f'before: {sys.executable} -c "import shutil' in out and 'runs/demo/small/s1/done.json runs/demo/grown/s1/init.pt' in out
    code, out = call(tmp_path, monkeypatch, capsys, '--jobs', '2')
    assert code == 0, out
    for seed in (1, 2):
        run = tmp_path / 'runs' / 'demo' / 'grown' / f's{seed}'
        # the pre-step ran after small of the same seed had finished (it copied its done.json), then train.py
        assert json.loads((run / 'init.pt').read_text())['args'][1] == f'--out_dir=runs/demo/small/s{seed}'
        [c] = calls(tmp_path, 'grown', seed)
        assert c['argv'][-1] == f'--init_from=runs/demo/grown/s{seed}/init.pt'
        assert (run / 'train.log').read_text().count('shutil.copy') == 1
    assert out.index('done   small/s1') < out.index('start  grown/s1')
    assert {r['arm'] for r in summary(tmp_path)} == {'scratch', 'small', 'grown'}

    run = tmp_path / 'runs' / 'demo' / 'grown' / 's1'
    (run / 'done.json').unlink()
    (run / 'last.pt').unlink()  # grown/s1 starts afresh; its pre-step's output is there: not run again
    (tmp_path / 'results' / 'demo.runs.json').unlink()  # else the results record it as finished (see the next test)
    code, out = call(tmp_path, monkeypatch, capsys, '--dry_run')
    assert code == 0 and '(skipped: runs/demo/grown/s1/init.pt exists)' in out
    code, out = call(tmp_path, monkeypatch, capsys)
    assert code == 0 and '5 done (skipped), 1 to run' in out, out
    assert len(calls(tmp_path, 'grown', 1)) == 2 and (run / 'train.log').read_text().count('shutil.copy') == 1


def test_a_later_session_skips_the_runs_the_committed_results_record(tmp_path, monkeypatch, capsys):
    """runs/ is gone (a new session), results/ is committed: those runs are 'recorded', not run again, and stay in
    the table; one that an unfinished run needs is run again for its checkpoint; a changed one is run again."""
    write_study(tmp_path, arms={'scratch': {}, 'small': GROWN['small']})
    code, first = call(tmp_path, monkeypatch, capsys, '--jobs', '2')
    assert code == 0, first
    table = lambda out: out[out.index('| arm'):].split('\nwrote')[0]
    recorded = json.loads((tmp_path / 'results' / 'demo.runs.json').read_text())
    assert sorted(recorded) == ['scratch/s1', 'scratch/s2', 'small/s1', 'small/s2']
    assert recorded['small/s1']['args'][-1] == '--speed=0.5'
    shutil.rmtree(tmp_path / 'runs')
    code, out = call(tmp_path, monkeypatch, capsys)
    assert code == 0 and '4 done (skipped; 4 recorded in results/demo.* by an earlier session), 0 to run' in out
    assert table(out) == table(first) and not (tmp_path / 'runs').exists()
    code, out = call(tmp_path, monkeypatch, capsys, '--table')
    assert code == 0 and table(out) == table(first) and 'from results/demo.* (finished in an earlier session)' in out

    write_study(tmp_path, arms={'scratch': {}, 'small': GROWN['small'], 'grown': GROWN['grown']})  # a new arm
    code, out = call(tmp_path, monkeypatch, capsys, '--dry_run')
    assert code == 0 and 'small/s1: recorded by an earlier session, run again: grown/s1 needs its checkpoint' in out
    assert [line.split(':')[0] for line in out.splitlines() if line.startswith(('start', 'recorded'))] == [
        'recorded scratch/s1', 'recorded scratch/s2', 'start    small/s1', 'start    small/s2', 'start    grown/s1', 'start    grown/s2']
    code, out = call(tmp_path, monkeypatch, capsys, '--jobs', '2')
    assert code == 0 and '2 done (skipped; 2 recorded' in out and '4 to run' in out, out
    assert calls(tmp_path, 'scratch', 1) == [] and len(calls(tmp_path, 'small', 1)) == 1
    assert sorted((r['arm'], r['seed']) for r in summary(tmp_path)) == [
        ('grown', '1'), ('grown', '2'), ('scratch', '1'), ('scratch', '2'), ('small', '1'), ('small', '2')]

    shutil.rmtree(tmp_path / 'runs')
    write_study(tmp_path, arms={'scratch': {}, 'small': {'speed': 4.0}, 'grown': GROWN['grown']})  # small changed
    code, out = call(tmp_path, monkeypatch, capsys, '--dry_run')
    assert code == 0 and 'start    small/s1' in out and 'recorded grown/s1' in out and 'recorded scratch/s1' in out


def test_a_failed_pre_step_fails_its_run_and_the_runs_that_need_it(tmp_path, monkeypatch, capsys):
    fail = "python -c 'import sys; sys.exit(\"error: no source checkpoint\")'"
    write_study(tmp_path, seeds=[1], arms={'scratch': {}, 'broken': {'before': [('{run}/init.pt', fail)]},
                                          'next': {'after': ['broken']}})
    code, out = call(tmp_path, monkeypatch, capsys, '--jobs', '2')
    assert code == 1
    assert f'FAILED broken/s1: before train.py, {sys.executable} -c' in out and 'exit 1: error: no source checkpoint' in out
    assert 'FAILED next/s1: not run, it needs broken/s1' in out and '2 run(s) failed: broken/s1, next/s1' in out
    assert calls(tmp_path, 'broken', 1) == [] and calls(tmp_path, 'next', 1) == []  # train.py never started
    assert not (tmp_path / 'runs' / 'demo' / 'broken' / 's1' / 'init.pt').exists()
    assert [r['arm'] for r in summary(tmp_path)] == ['scratch']


@pytest.mark.parametrize('path', sorted(p for p in os.listdir(os.path.join(REPO, 'config')) if p.startswith('study_')))
def test_the_study_files_load(path, monkeypatch):
    monkeypatch.chdir(REPO)
    s = study.load_study(os.path.join('config', path), study.train_keys())  # every arm key is one of train.py's
    runs = study.plan(s)
    assert len(runs) >= 3 * len(s['seeds']) and all(r['args'][0] == s['base'] for r in runs)
    assert not any('{' in a for r in runs for a in r['args'] if a.startswith('--init_from'))  # placeholders filled


def test_fair_baseline_trains_as_many_parameters_as_tied_lora(shared, monkeypatch):
    """stories260K fine-tuned with `fair`'s train_only regex trains about as many parameters as the 8-layer tied
    LoRA arm it is the baseline of."""
    from checkpoint import build_model, load_any
    monkeypatch.chdir(REPO)
    arms = study.load_study('config/study_stories260k_tied.py')['arms']
    ckpt = load_any(f"llama2c:{shared / 'models/stories260K/stories260K.bin'}")
    lora = arms['tied_lora8']
    tied = build_model(ckpt, **{k: lora[k] for k in ('layer_map', 'lora_rank', 'lora_alpha', 'lora_dropout')})
    tied.set_trainable(lora['train_only'])
    fair = build_model(ckpt)
    fair.set_trainable(arms['fair']['train_only'])
    n_tied, n_fair = tied.param_counts()['trainable'], fair.param_counts()['trainable']
    assert n_tied == 65_792 and abs(n_fair / n_tied - 1) < 0.01, (n_fair, n_tied)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason="a runner's death reaches its runs through Linux's prctl")
def test_a_killed_runner_stops_its_runs_and_the_next_session_redoes_none_finished(tmp_path, monkeypatch, capsys):
    """kill -9 of the runner mid-study (--jobs 2): the runs it started get SIGTERM and save last.pt, as train.py
    does (no orphan trains on); the next session resumes exactly those and skips the finished ones."""
    write_study(tmp_path, arms={'scratch': {}, 'slow': {'sleep': 120}})
    p = subprocess.Popen([sys.executable, os.path.join(REPO, 'study.py'), 'demo.py', '--jobs', '2', '--train', FAKE],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = lambda arm, s: tmp_path / 'runs' / 'demo' / arm / f's{s}'
    deadline = time.time() + 60
    while not all((run('scratch', s) / 'done.json').exists() and (run('slow', s) / 'last.pt').exists() for s in (1, 2)):
        assert time.time() < deadline and p.poll() is None, "the study never got both slow runs going"
        time.sleep(0.1)
    pids = [calls(tmp_path, 'slow', s)[0]['pid'] for s in (1, 2)]
    p.kill()
    p.wait()
    deadline = time.time() + 30
    for pid in pids:  # stopped by the runner's death, not left training
        while os.path.exists(f'/proc/{pid}') and open(f'/proc/{pid}/stat').read().split()[2] != 'Z':
            assert time.time() < deadline, f"run {pid} outlived the killed runner"
            time.sleep(0.1)
    for s in (1, 2):
        assert (run('slow', s) / 'last.pt').read_text() == f"saved on signal {int(signal.SIGTERM)}"
        assert not (run('slow', s) / 'done.json').exists()
    code, out = call(tmp_path, monkeypatch, capsys, '--jobs', '2')
    assert code == 0, out
    for s in (1, 2):
        assert len(calls(tmp_path, 'scratch', s)) == 1  # finished before the kill: not run again
        assert [c['argv'][-1] for c in calls(tmp_path, 'slow', s)] == ['--sleep=120', '--init_from=resume']
    assert len(list((tmp_path / 'runs').rglob('done.json'))) == 4
