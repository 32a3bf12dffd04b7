"""
Run a study: every (arm, seed) of a study file as one train.py run, resumable in a later session, then the table.

  python study.py config/study_growth.py --jobs 2     # two runs at a time, one thread each (a 2-core machine)
  python study.py config/study_growth.py --dry_run    # what would start, resume or be skipped, with the commands
  python study.py config/study_growth.py --only scratch,stack
  python study.py config/study_growth.py --table      # only the table of the finished runs

A study file is Python, like a config file: `name`, `base` (a train.py config file), `seeds` (ints; the seed sets the
init and the data order), `arms` (arm -> dict of train.py keys and values), optionally `losses` (target val losses
for the table) and `scratch` (the arm every other arm is measured against; default 'scratch'); other names are
errors (typos), except helpers starting with _. Run (arm, seed) is

  python train.py <base> --out_dir=runs/<name>/<arm>/s<seed> --seed=<seed> --<key>=<value> ...

with its output in out_dir/train.log. Starting a run writes out_dir/run.json (the command); train.py exiting 0
writes out_dir/done.json (command, exit code, wall time). A run with done.json is skipped, one with last.pt is
resumed (--init_from=resume), and one whose command (or base config file) changed since is an error unless --force,
which starts it afresh. Ctrl-C (or SIGTERM) stops every running train.py the way train.py stops itself (last.pt
saved): the next call resumes them. A failed run is reported (exit code, last line of its output) and the others go
on. At the end compare.py makes the table of the finished runs and writes results/<name>.csv (the small per-run
summary), results/<name>.curves.csv (their eval records) and results/<name>.png: `python compare.py --from_csv
results/<name>.csv` remakes table and plot from the CSVs alone. With them results/<name>.runs.json records each
run's command: commit the three files and a later session (whose runs/ is gone) skips those runs as 'recorded'
and keeps them in its table; a recorded run is only run again when an unfinished run needs its checkpoint.

Three arm keys are the runner's, not train.py's: 'seeds' (this arm's seeds instead of the study's, e.g. more seeds
for the reference arm than for the others), and for runs built from other runs (grow two small models into one,
or import a pretrained model first):
  'after': ['a', 'b']     the arms whose run of the same seed must have finished first (the runner waits for them;
                          --only takes the unfinished ones along)
  'before': [(out, cmd)]  commands run in order before train.py starts afresh, each skipped when its output file
                          `out` exists (so write it atomically, as grow.py does); their output goes to train.log; a
                          failing one fails the run and train.py does not start. `python` is this interpreter.
In them and in the arm's string values, {seed}, {run} (the run's out_dir) and {runs} (runs/<name>) are filled in:
  'small': {'n_layer': 4},
  'grown': {'after': ['small'], 'init_from': '{run}/init.pt', 'before': [('{run}/init.pt',
            'python grow.py --method stack --out {run}/init.pt {runs}/small/s{seed}/last.pt')]},
"""
import argparse
import ctypes
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import types

import compare
from configurator import ArgumentParser, key_comments, unknown

KEYS = {'name': str, 'base': str, 'seeds': list, 'arms': dict, 'losses': list, 'scratch': str}
RUNNER_KEYS = ('after', 'before', 'seeds')  # arm keys for the runner, not for train.py
NAME = re.compile(r'[A-Za-z0-9_.-]+')  # study and arm names are directory names
HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = [sys.executable, os.path.relpath(os.path.join(HERE, 'train.py'))]


def train_keys():
    """train.py's config keys, read from its source (importing train.py would train): the names its config section
    assigns before `defaults` collects them, and model.py's GPTConfig fields."""
    names = list(key_comments(os.path.join(HERE, 'train.py')))
    model = key_comments(os.path.join(HERE, 'model.py'), in_classes=True)
    return list(dict.fromkeys(names[:names.index('defaults')] + list(model)))


def load_study(path, keys=None):
    """The study file's settings, checked (with `keys`, the arms' keys against them: train.py's config keys);
    raises ValueError/FileNotFoundError naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such study file")
    scope = {}
    try:
        with open(path) as f:
            exec(compile(f.read(), path, 'exec'), scope)
    except Exception as e:
        raise ValueError(f"{path}: {type(e).__name__}: {e}") from None
    study = {k: v for k, v in scope.items() if not k.startswith('_') and not isinstance(v, types.ModuleType) and not callable(v)}
    for k in study:
        if k not in KEYS:
            raise ValueError(f"{path}: unknown key {k!r} (a study has {', '.join(KEYS)})")
    study = {'losses': [], 'scratch': 'scratch', **study}
    for k, t in KEYS.items():
        if k not in study:
            raise ValueError(f"{path}: {k} is missing")
        if not isinstance(study[k], t):
            raise ValueError(f"{path}: {k} must be a {t.__name__}, got {study[k]!r}")
    arms = study['arms']
    for where, seeds in [('seeds', study['seeds'])] + [(f"arm {a!r}: seeds", o['seeds']) for a, o in arms.items()
                                                        if isinstance(o, dict) and 'seeds' in o]:
        if not isinstance(seeds, list) or not seeds or any(type(s) is not int for s in seeds) or len(set(seeds)) < len(seeds):
            raise ValueError(f"{path}: {where} must be distinct ints, got {seeds!r}")
    if any(type(x) not in (int, float) for x in study['losses']):
        raise ValueError(f"{path}: losses must be numbers, got {study['losses']!r}")
    if not arms:
        raise ValueError(f"{path}: arms is empty")
    for name in [study['name'], *arms]:
        if not isinstance(name, str) or not NAME.fullmatch(name) or not name.strip('.'):  # '..' would leave runs/
            raise ValueError(f"{path}: {name!r} cannot name a directory (letters, digits, _ . -)")
    for arm, overrides in arms.items():
        if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
            raise ValueError(f"{path}: arm {arm!r} must be a dict of train.py keys, got {overrides!r}")
        taken = {'out_dir', 'seed'} & set(overrides)
        if taken:
            raise ValueError(f"{path}: arm {arm!r} sets {taken.pop()}, which the runner sets per run")
        for k in overrides:  # a typo fails here, not in every run it would start
            if keys is not None and k not in keys and k not in RUNNER_KEYS:
                raise unknown(k, [*keys, *RUNNER_KEYS], f"in arm {arm!r} of {path}")
        after, before = overrides.get('after', []), overrides.get('before', [])
        if not isinstance(after, list) or any(a not in arms or a == arm for a in after):
            raise ValueError(f"{path}: arm {arm!r}: after must be a list of other arms, got {after!r}")
        if not isinstance(before, list) or not all(isinstance(b, (tuple, list)) and len(b) == 2 and
                                                   all(isinstance(x, str) and x for x in b) for b in before):
            raise ValueError(f"{path}: arm {arm!r}: before must be a list of (output file, command), got {before!r}")
    for arm, overrides in arms.items():
        for a in overrides.get('after', []):
            missing = set(arm_seeds(study, arm)) - set(arm_seeds(study, a))
            if missing:
                raise ValueError(f"{path}: arm {arm!r} needs {a!r}, which has no seed {min(missing)}")
    needed(arms, arms, path)  # no cycle among the arms' `after`
    if study['scratch'] not in arms:
        raise ValueError(f"{path}: scratch={study['scratch']!r} is not an arm ({', '.join(arms)})")
    if not os.path.isfile(study['base']):
        raise FileNotFoundError(f"{path}: base config {study['base']} not found")
    with open(study['base'], 'rb') as f:
        study['base_sha256'] = hashlib.sha256(f.read()).hexdigest()
    return study


def needed(arms, wanted, path=''):
    """The wanted arms and every arm they need (through `after`), in an order that puts needed arms first."""
    order, visiting = [], []
    def visit(arm):
        if arm in visiting:
            raise ValueError(f"{path}: arms need each other in a cycle: {' -> '.join(visiting[visiting.index(arm):] + [arm])}")
        if arm not in order:
            visiting.append(arm)
            for dep in arms[arm].get('after', []):
                visit(dep)
            order.append(visiting.pop())
    for arm in wanted:
        visit(arm)
    return order


def arm_seeds(study, arm):
    return study['arms'][arm].get('seeds', study['seeds'])


def fill(text, names):
    """text with {seed}, {run} and {runs} filled in (plain replacement: other braces, e.g. of dicts, stay)."""
    for k, v in names.items():
        text = text.replace('{' + k + '}', str(v))
    return text


def plan(study, only=None):
    """The runs, arm by arm and seed by seed: arm, seed, out_dir, train.py's arguments, the pre-steps (`before`:
    [output, command]) and the runs it needs first (`after`); with `only`, those arms and the arms they need."""
    runs = []
    arms = study['arms']
    for arm in needed(arms, only or arms):  # an arm after the arms it needs
        for seed in arm_seeds(study, arm):
            out_dir = os.path.join('runs', study['name'], arm, f's{seed}')
            names = {'seed': seed, 'run': out_dir, 'runs': os.path.join('runs', study['name'])}
            overrides = {k: v for k, v in arms[arm].items() if k not in RUNNER_KEYS}
            args = [study['base'], f'--out_dir={out_dir}', f'--seed={seed}']
            args += [f"--{k}={fill(v, names) if isinstance(v, str) else repr(v)}" for k, v in overrides.items()]
            before = [[fill(out, names), fill(cmd, names)] for out, cmd in arms[arm].get('before', [])]
            after = [f'{a}/s{seed}' for a in arms[arm].get('after', [])]
            runs.append({'arm': arm, 'seed': seed, 'name': f'{arm}/s{seed}', 'out_dir': out_dir, 'args': args,
                         'before': before, 'after': after})
    return runs


def command(cmd):
    """A pre-step's argv; `python` is this interpreter."""
    argv = shlex.split(cmd)
    return [sys.executable] + argv[1:] if argv and argv[0] == 'python' else argv


def show(cmd):
    """A command as one pastable shell line; Python literals (dicts, lists) in double rather than single quotes."""
    safe = lambda a: shlex.quote(a) == a or set(a) & set('"$`\\!')
    return ' '.join(shlex.quote(a) if safe(a) else f'"{a}"' for a in cmd)


def read_json(path):
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except ValueError as e:  # a binary file, a merge conflict's markers, a cut file
        raise ValueError(f"{path}: not a JSON file ({type(e).__name__}: {str(e)[:200]})") from None


def write_json(path, obj):
    def write(tmp):
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=2)
    compare.atomic_write(path, write)


def fingerprint(record):
    return record['args'], record.get('before', []), record['base_sha256']


def status(run, study, recorded=None):
    """'done' (skip), 'changed' (ran with another command), 'resume' (has last.pt), 'recorded' (finished in an earlier
    session: in the committed results with the study's command, no run dir here) or 'start'."""
    done = read_json(os.path.join(run['out_dir'], 'done.json'))
    has_ckpt = os.path.isfile(os.path.join(run['out_dir'], 'last.pt'))
    ran = done or (read_json(os.path.join(run['out_dir'], 'run.json')) if has_ckpt else None)
    now = (run['args'], run['before'], study['base_sha256'])
    if ran and fingerprint(ran) != now:
        return 'changed'
    if done or has_ckpt:
        return 'done' if done else 'resume'
    earlier = (recorded or {}).get(run['name'])
    return 'recorded' if earlier and fingerprint(earlier['command']) == now else 'start'


def results_path(study):
    return os.path.join('results', study['name'])


def read_recorded(study):
    """The runs of the committed results (results/<name>.csv, .curves.csv, .runs.json: written with every table, so a
    later session, whose runs/ is empty, skips them): {name: {'command': run.json's fields, 'run': compare's run}}."""
    base = results_path(study)
    commands = read_json(base + '.runs.json')
    if not commands or not os.path.isfile(base + '.csv') or not os.path.isfile(compare.curves_path(base + '.csv')):
        return {}
    rows, _ = compare.read_csv(base + '.csv')
    sizes = {f"{r['arm']}/s{r['seed']}": r for r in rows}
    recorded = {}
    for run in compare.read_curves(compare.curves_path(base + '.csv')):
        if run['label'] in commands and run['label'] in sizes:
            run['model'] = {k: sizes[run['label']][k] for k in compare.MODEL_FIELDS if sizes[run['label']][k] is not None}
            recorded[run['label']] = {'command': commands[run['label']], 'run': run}
    return recorded


def start(run, study, train, jobs):
    """The run's job: its pre-steps whose output is missing (unless it resumes), then train.py, one after the
    other, each Popen'ed with its output appended to out_dir/train.log."""
    out_dir = run['out_dir']
    os.makedirs(out_dir, exist_ok=True)
    resume = os.path.isfile(os.path.join(out_dir, 'last.pt'))
    stale = os.path.join(out_dir, 'log.jsonl')
    if not resume and os.path.isfile(stale):  # from an attempt that died before its first checkpoint: train.py appends
        os.remove(stale)
    cmd = train + run['args'] + (['--init_from=resume'] if resume else [])
    write_json(os.path.join(out_dir, 'run.json'), {'args': run['args'], 'before': run['before'],
                                                   'base_sha256': study['base_sha256'], 'command': cmd})
    steps = [] if resume else [command(c) for out, c in run['before'] if not os.path.isfile(out)]
    job = {**run, 'queue': steps + [cmd], 'cmd': cmd, 't0': time.time(), 'log': os.path.join(out_dir, 'train.log'),
           'resumed': resume, 'env': os.environ | ({'OMP_NUM_THREADS': '1'} if jobs > 1 else {})}  # 2 runs, 2 cores
    return launch(job)


def stop_with_runner(runner_pid):
    """The run's preexec_fn: it gets SIGTERM (train.py saves last.pt and stops) when the runner dies, even by
    SIGKILL, so no orphan trains on beside the next session's resume of the same run (Linux's prctl; elsewhere
    nothing changes)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != runner_pid:  # the runner died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def launch(job):
    """Start the job's next command."""
    argv = job['queue'].pop(0)
    with open(job['log'], 'a') as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {show(argv)}\n")
        log.flush()
        job['offset'] = log.tell()
        # its own session: a terminal's Ctrl-C reaches only the runner, which stops each run exactly once
        job['proc'] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=job['env'], start_new_session=True,
                                       preexec_fn=lambda pid=os.getpid(): stop_with_runner(pid))
    return job


def last_line(path, offset):
    with open(path, 'rb') as f:
        f.seek(offset)
        lines = [line.strip() for line in f.read().decode('utf-8', 'replace').splitlines() if line.strip()]
    return lines[-1] if lines else '(no output)'


def finish(job, study):
    """Record a finished run (done.json) or report its failure; -> True if it succeeded."""
    rc, wall = job['proc'].returncode, time.time() - job['t0']
    if rc == 0:
        write_json(os.path.join(job['out_dir'], 'done.json'), {
            'args': job['args'], 'before': job['before'], 'base_sha256': study['base_sha256'], 'command': job['cmd'],
            'returncode': rc, 'wall_seconds': round(wall, 1), 'resumed': job['resumed'],
            'finished': time.strftime('%Y-%m-%d %H:%M:%S')})
        print(f"done   {job['name']} in {wall:.0f} s")
        return True
    step = '' if job['proc'].args == job['cmd'] else f" before train.py, {show(job['proc'].args)}"
    print(f"FAILED {job['name']}:{step} exit {rc}: {last_line(job['log'], job['offset'])} (see {job['log']})")
    return False


def eta(pending, running, walls, jobs):
    """Seconds until the runs left are done, from recorded wall times ({arm: [seconds]}, done.json's): each run
    counts as its arm's mean (the mean over all arms for an arm not timed yet), a running one less the time it has
    run, spread over `jobs` at a time; None before any run is timed."""
    every = [w for ws in walls.values() for w in ws]
    if not every:
        return None
    mean = lambda arm: sum(walls.get(arm) or every) / len(walls.get(arm) or every)
    left = sum(mean(r['arm']) for r in pending) + sum(max(0.0, mean(j['arm']) - (time.time() - j['t0'])) for j in running)
    return left / jobs


def progress(n_done, pending, running, walls, jobs):
    """'runs: 3 done, 1 running, 4 to go, ETA ~12 min' (the study's runs, including those finished before)."""
    left = eta(pending, running, walls, jobs)
    when = 'ETA after the first run' if left is None else f"ETA ~{left / 60:.0f} min ({time.strftime('%H:%M', time.localtime(time.time() + left))})"
    return f"runs: {n_done} done, {len(running)} running, {len(pending)} to go, {when}"


def interrupted(signum, frame):
    raise KeyboardInterrupt


def run_all(todo, study, train, jobs, done=(), walls=None):
    """Run the runs `jobs` at a time, each once the runs it needs are done (`done`: finished before); -> names of the
    failed runs, in the study's order. walls: {arm: [wall seconds]} of finished runs, for the ETA printed after each
    run. Ctrl-C/SIGTERM: stop the running ones (they save last.pt) and exit 130."""
    pending, running, failed, done = list(todo), [], [], set(done)
    walls = {arm: list(ws) for arm, ws in (walls or {}).items()}
    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        while pending or running:
            for run in [r for r in pending if any(n in failed for n in r['after'])]:
                pending.remove(run)
                failed.append(run['name'])
                print(f"FAILED {run['name']}: not run, it needs {', '.join(n for n in run['after'] if n in failed)}")
            ready = [r for r in pending if all(n in done for n in r['after'])]
            while ready and len(running) < jobs:
                run = ready.pop(0)
                pending.remove(run)
                running.append(start(run, study, train, jobs))
                print(f"{'resume' if running[-1]['resumed'] else 'start '} {run['name']} (output in {running[-1]['log']})")
            for job in [j for j in running if j['proc'].poll() is not None]:
                if job['proc'].returncode == 0 and job['queue']:
                    launch(job)  # the pre-step went well: the next one, or train.py
                    continue
                running.remove(job)
                if finish(job, study):
                    done.add(job['name'])
                    walls.setdefault(job['arm'], []).append(time.time() - job['t0'])
                    print(progress(len(done), pending, running, walls, jobs))
                else:
                    failed.append(job['name'])
            time.sleep(0.2)
    except KeyboardInterrupt:
        print(f"\nstopping {len(running)} run(s) as train.py stops on SIGTERM, saving last.pt (Ctrl-C again kills them)",
              file=sys.stderr)
        for job in running:
            job['proc'].terminate()  # SIGTERM: train.py finishes its iteration and saves last.pt
        try:
            for job in running:
                job['proc'].wait()
        except KeyboardInterrupt:
            for job in running:
                job['proc'].kill()
                job['proc'].wait()
        running = [j for j in running if not (j['proc'].returncode == 0 and not j['queue'] and finish(j, study))]  # done meanwhile
        saved = [j['name'] for j in running if os.path.isfile(os.path.join(j['out_dir'], 'last.pt'))]
        lost = [j['name'] for j in running if j['name'] not in saved]
        print("stopped; the same command goes on" + (f", resuming {', '.join(saved)}" if saved else '')
              + (f", starting afresh {', '.join(lost)} (no last.pt)" if lost else ''), file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return [r['name'] for r in todo if r['name'] in failed]


def make_table(study, recorded):
    """compare.py's table of the finished runs (whose command is the study's), with the runs recorded by an earlier
    session: results/<name>.csv, .curves.csv and .runs.json (each run's command), and results/<name>.png."""
    runs = plan(study)
    states = {r['name']: status(r, study, recorded) for r in runs}
    finished = [r for r in runs if states[r['name']] in ('done', 'recorded')]
    other = [n for n, s in states.items() if s not in ('done', 'recorded')]
    if other:
        print(f"not in the table (unfinished or changed): {', '.join(other)}")
    if not any(r['arm'] == study['scratch'] for r in finished):
        print(f"no table yet: no finished {study['scratch']} run")
        return
    earlier = [r['name'] for r in finished if states[r['name']] == 'recorded']
    if earlier:
        print(f"from {results_path(study)}.* (finished in an earlier session): {', '.join(earlier)}")
    logs = [recorded[r['name']]['run'] if states[r['name']] == 'recorded' else
            compare.read_log(f"{r['arm']}={r['out_dir']}") for r in finished]
    rows = compare.summarize(logs, study['scratch'], [1.0], study['losses'])
    base = results_path(study)
    print()
    compare.report(rows, compare.target_keys([1.0], study['losses']), logs, csv_path=base + '.csv', png=base + '.png')
    write_json(base + '.runs.json', {r['name']: recorded[r['name']]['command'] if states[r['name']] == 'recorded' else
                                     dict(zip(('args', 'before', 'base_sha256'), fingerprint(read_json(
                                         os.path.join(r['out_dir'], 'done.json'))))) for r in finished})


def main(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('study', help="study file (Python: name, base, seeds, arms[, losses, scratch])")
    p.add_argument('--jobs', type=int, default=1, help="runs at a time; above 1 each gets OMP_NUM_THREADS=1")
    p.add_argument('--only', help="comma-separated arms to run (the table still covers every finished run)")
    p.add_argument('--dry_run', action='store_true', help="print each run's state and command, run nothing")
    p.add_argument('--table', action='store_true', help="run nothing, only make the table of the finished runs")
    p.add_argument('--force', action='store_true', help="start afresh the finished or started runs whose command changed")
    p.add_argument('--train', default=shlex.join(TRAIN), help="the training command (e.g. 'torchrun --nproc_per_node=8 train.py')")
    args = p.parse_args(argv)
    try:
        train = shlex.split(args.train)
        if not train:
            raise ValueError("--train is empty")
        runs_train_py = any(os.path.isfile(a) and os.path.samefile(a, os.path.join(HERE, 'train.py')) for a in train)
        study = load_study(args.study, train_keys() if runs_train_py else None)
        only = args.only.split(',') if args.only is not None else None
        if only is not None and not all(only):
            raise ValueError(f"--only takes comma-separated arm names, got {args.only!r}")
        unknown = [a for a in only or [] if a not in study['arms']]
        if unknown:
            raise ValueError(f"--only: no arm {unknown[0]!r} in {args.study} ({', '.join(study['arms'])})")
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
        recorded = read_recorded(study)
        if args.table:
            return make_table(study, recorded)
        runs = plan(study, only)
        states = {r['name']: status(r, study, recorded) for r in runs}
        for r in reversed(runs):  # an earlier session's run that an unfinished run builds on: its checkpoint is needed
            if states[r['name']] not in ('done', 'recorded'):
                for name in r['after']:
                    if states[name] == 'recorded':
                        states[name] = 'start'
                        print(f"{name}: recorded by an earlier session, run again: {r['name']} needs its checkpoint")
        if args.dry_run:
            for r in runs:
                extra = ['--init_from=resume'] if states[r['name']] == 'resume' else []
                print(f"{states[r['name']]:8} {r['name']}: {show(train + r['args'] + extra)}")
                for out, cmd in r['before'] if states[r['name']] == 'start' else []:
                    print(f"{'':8}   before: {show(command(cmd))}" + (f"  (skipped: {out} exists)" if os.path.isfile(out) else ''))
            if 'changed' in states.values():
                print("changed: ran with another command or base config; --force starts them afresh")
            return
        changed = [r for r in runs if states[r['name']] == 'changed']
        if changed and not args.force:
            raise ValueError(f"{len(changed)} run(s) ran with another command or base config than the study's now "
                             f"({', '.join(r['name'] for r in changed)}; see their run.json): restore the study file, "
                             f"or start them afresh with --force")
        for r in changed:
            shutil.rmtree(r['out_dir'])
            states[r['name']] = 'start'
        todo = [r for r in runs if states[r['name']] not in ('done', 'recorded')]
        earlier = sum(st == 'recorded' for st in states.values())
        print(f"study {study['name']}: {len(runs)} runs, {len(runs) - len(todo)} done (skipped"
              + (f"; {earlier} recorded in {results_path(study)}.* by an earlier session" if earlier else '')
              + f"), {len(todo)} to run, {args.jobs} at a time")
        walls = {}
        for r in runs:
            wall = (read_json(os.path.join(r['out_dir'], 'done.json')) or {}).get('wall_seconds')
            if states[r['name']] == 'done' and wall is not None:
                walls.setdefault(r['arm'], []).append(wall)
        failed = run_all(todo, study, train, args.jobs, done=[n for n, st in states.items() if st in ('done', 'recorded')],
                         walls=walls)
        if failed:
            print(f"{len(failed)} run(s) failed: {', '.join(failed)}")
        make_table(study, recorded)
        if failed:
            sys.exit(1)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == '__main__':
    main()
