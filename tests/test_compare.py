"""compare.py (and `eval.py compare`, its thin entry): speedup on synthetic logs, runs paired with the scratch run
of their own seed, mean ± sd over seeds, seeds that never reach a target counted, the summary CSV giving the same
table, optional matplotlib, one-line errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import compare


def write_log(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(json.dumps(r) for r in records) + '\n')


def evals(points):
    return [{'type': 'eval', 'iter': i, 'tokens': 100 * f, 'flops': f, 'train_loss': l, 'val_loss': l, 'lr': 1e-3,
             'elapsed': f / 10} for i, (f, l) in enumerate(points)]


def grow(flops, **extra):
    return {'type': 'grow', 'iter': flops, 'tokens': 100 * flops, 'flops': flops, 'method': 'stack', 'options': {},
            'n_layer_before': 2, 'n_layer_after': 4, 'params_before': 1, 'params_after': 2, **extra}


def out(capsys, *args):
    """compare.py's stdout, run in-process."""
    capsys.readouterr()
    compare.main(list(map(str, args)))
    return capsys.readouterr().out


def run(repo, script, *args, ok=True, env=None):
    r = subprocess.run([sys.executable, script, *map(str, args)], cwd=repo, capture_output=True, text=True, env=env)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def test_speedup_on_synthetic_logs(tmp_path, capsys):
    write_log(tmp_path / 'scratch' / 'log.jsonl', evals([(0, 4.0), (10, 3.0), (20, 2.5), (30, 2.2), (40, 2.0)]))
    write_log(tmp_path / 'grown' / 'log.jsonl', [grow(5)] + evals([(5, 3.0), (15, 2.4), (25, 2.0), (35, 1.9)]))
    write_log(tmp_path / 'tied.jsonl', evals([(0, 4.0), (40, 2.1)]))
    png = tmp_path / 'cmp.png'
    args = [tmp_path / 'scratch', tmp_path / 'grown', f'tied={tmp_path / "tied.jsonl"}', '--at', '0.5,1',
            '--losses', '2.2', '--out', png]
    res = json.loads(out(capsys, *args, '--json'))
    assert res['targets'] == ['2.2', '0.5C', 'final'] and res['scratch'] == 'scratch'
    by = {r['arm']: r for r in res['runs']}
    assert by['scratch']['flops@final'] == 40 and by['grown']['flops@final'] == 25 and by['tied']['flops@final'] is None
    assert by['grown']['sp@final'] == pytest.approx(40 / 25 - 1) and by['tied']['sp@final'] is None
    assert by['grown']['flops@2.2'] == pytest.approx(20)  # 15 + (2.4-2.2)/(2.4-2.0) * 10
    assert by['grown']['sp@2.2'] == pytest.approx(30 / 20 - 1)
    assert by['grown']['loss@0.5C'] == pytest.approx(2.5) and by['grown']['flops@0.5C'] == pytest.approx(5 + 0.5 / 0.6 * 10)
    assert by['grown']['sp@0.5C'] == pytest.approx(20 / (5 + 0.5 / 0.6 * 10) - 1)
    assert by['grown']['growth_iters'] == '5' and by['scratch']['growth_iters'] == ''
    assert png.stat().st_size > 0
    table = out(capsys, *args)
    assert "| arm | at 2.2000 | at scratch's loss at 0.5 C (2.5000) | at final L* (2.0000) | final val loss |" in table
    assert '| scratch (C) | 3.000e+01 (n=1) | 2.000e+01 (n=1) | 4.000e+01 (n=1) | 2.0000 (n=1) |' in table
    assert '| grown (sp) | +50.0% (n=1) | +50.0% (n=1) | +60.0% (n=1) | 1.9000 (n=1) |' in table
    assert '| tied (sp) | -20.8% (n=1) | -36.7% (n=1) | - (n=0; 1 never reaches) | 2.1000 (n=1) |' in table
    import eval as ev  # the command users type keeps working: `python eval.py compare ...` is compare.py
    ev.main(['compare', *map(str, args)])
    assert capsys.readouterr().out == table


def study_logs(root):
    """Three seeds of scratch and stack with hand-computable crossings; stack's seed 3 never reaches 2.5 nor L*_3;
    lesa (seed 3 only) reaches 2.1, which its scratch never does; tied has only a seed without a scratch run."""
    curves = {('scratch', 1): [(0, 4), (10, 3), (20, 2)], ('scratch', 2): [(0, 4), (10, 3), (30, 2)],
              ('scratch', 3): [(0, 4), (10, 3), (20, 2.4)],
              ('stack', 1): [(0, 4), (5, 3), (15, 2)], ('stack', 2): [(0, 4), (10, 2.5), (20, 2)],
              ('stack', 3): [(0, 4), (20, 2.6)], ('lesa', 3): [(0, 4), (10, 2)], ('tied', 4): [(0, 4), (10, 2)]}
    for (arm, seed), points in curves.items():
        records = evals(points)
        if arm == 'stack':  # growth, with operator FLOPs (already inside flops)
            records.insert(1, grow(2, operator_flops=0.25))
        write_log(root / arm / f's{seed}' / 'log.jsonl', records)
    return root


def test_seeds_pair_with_their_own_scratch_run(tmp_path, capsys):
    runs = study_logs(tmp_path / 'runs' / 'demo')
    res = json.loads(out(capsys, runs, '--losses', '2.5,2.1', '--at', '1', '--json', '--out', tmp_path / 'p.png'))
    assert res['scratch'] == 'scratch' and res['targets'] == ['2.5', '2.1', 'final']
    rows = {(r['arm'], r['seed']): r for r in res['runs']}
    assert rows['stack', 1]['sp@final'] == pytest.approx(20 / 15 - 1)  # against scratch s1 (30/15-1 against s2)
    assert rows['stack', 2]['sp@final'] == pytest.approx(30 / 20 - 1)
    assert rows['stack', 3]['loss@final'] == 2.4 and rows['stack', 3]['flops@final'] is None
    assert rows['stack', 1]['sp@2.5'] == pytest.approx(15 / 10 - 1) and rows['stack', 2]['sp@2.5'] == pytest.approx(20 / 10 - 1)
    assert rows['stack', 1]['operator_flops'] == 0.25 and rows['stack', 1]['growth_iters'] == '2'
    line = {x['target']: x for x in res['table']}
    sp = line['final']['speedup']['stack']
    assert sp['n'] == 2 and sp['never'] == 1
    assert sp['mean'] == pytest.approx(np.mean([1 / 3, 0.5])) and sp['sd'] == pytest.approx(np.std([1 / 3, 0.5], ddof=1))
    assert line['final']['loss']['mean'] == pytest.approx((2 + 2 + 2.4) / 3)
    assert line['final']['scratch_flops']['mean'] == pytest.approx(70 / 3)
    assert line['2.5']['speedup']['stack'] | {'mean': None, 'sd': None} == {
        'n': 2, 'mean': None, 'sd': None, 'never': 1, 'scratch_never': 0, 'no_scratch': 0}
    assert line['2.1']['speedup']['lesa']['scratch_never'] == 1 and line['2.1']['speedup']['lesa']['n'] == 0
    assert line['final']['speedup']['lesa']['mean'] == pytest.approx(20 / 8 - 1)  # C_lesa(2.4) = 8
    assert line['final']['speedup']['tied'] | {'mean': None} == {'n': 0, 'mean': None, 'sd': None, 'never': 0,
                                                                 'scratch_never': 0, 'no_scratch': 1}
    assert res['final_val_loss']['stack']['mean'] == pytest.approx((2 + 2 + 2.6) / 3)
    table = out(capsys, runs, '--losses', '2.5,2.1', '--at', '1', '--out', tmp_path / 'p.png')
    assert '| arm | at 2.5000 | at 2.1000 | at final L* (2.1333 ± 0.2309) | final val loss |' in table
    assert ('| stack (sp) | +75.0% ± 35.4% (n=2; 1 never reaches) | +45.6% ± 14.0% (n=2; 1 scratch never reaches) '
            '| +41.7% ± 11.8% (n=2; 1 never reaches) | 2.2000 ± 0.3464 (n=3) |') in table
    assert '| scratch (C) | 1.778e+01 ± 2.5e+00 (n=3) |' in table and '| tied (sp) | - (n=0; 1 without a scratch run) |' in table
    only = out(capsys, runs, '--losses', '2.5,2.1', '--at', '1', '--out', tmp_path / 'p.png', '--arms', 'lesa')
    assert '| lesa (sp) |' in only and '| scratch (C) |' in only and 'stack' not in only and 'tied' not in only
    both = out(capsys, runs, '--at', '1', '--out', tmp_path / 'p.png', '--arms', 'tied,lesa')  # in the order asked for
    assert both.index('| scratch (C)') < both.index('| tied (sp)') < both.index('| lesa (sp)')


def test_from_csv_gives_the_table_of_the_logs(tmp_path, capsys):
    runs = study_logs(tmp_path / 'runs' / 'demo')
    csv_path = tmp_path / 'results' / 'demo.csv'
    args = ['--losses', '2.5,2.1', '--at', '0.5,1', '--out', tmp_path / 'p.png']
    from_logs = out(capsys, runs, *args, '--csv', csv_path)
    from_csv = out(capsys, '--from_csv', csv_path)
    assert from_csv.split('\nwrote')[0].strip() == from_logs.split('\nwrote')[0].strip()
    assert (tmp_path / 'results' / 'demo.png').stat().st_size > 0  # the plot, from the curves CSV beside it
    logs_json = json.loads(out(capsys, runs, *args, '--json'))
    csv_json = json.loads(out(capsys, '--from_csv', csv_path, '--json'))
    assert csv_json['table'] == logs_json['table'] and csv_json['final_val_loss'] == logs_json['final_val_loss']
    assert csv_json['runs'] == logs_json['runs']  # every per-run number round-trips exactly
    header = csv_path.read_text().splitlines()[0].split(',')
    assert header[:5] == ['arm', 'seed', 'scratch_arm', 'final_flops', 'final_val_loss'] and 'sp@2.5' in header
    assert len(csv_path.read_text().splitlines()) == 1 + 8
    from_logs = {r["label"]: r for r in map(compare.read_log, compare.expand([str(runs)]))}
    for run in compare.read_curves(str(tmp_path / 'results' / 'demo.curves.csv')):  # the curves round-trip exactly
        same = lambda r: json.dumps([r['evals'], r['grows']], sort_keys=True)  # NaN (no elapsed) equals NaN here
        assert same(run) == same(from_logs[run['label']])


def test_model_records_give_the_sizes_table_and_the_start_loss(tmp_path, capsys):
    """train.py's model records (at the start, after each growth): the last one sizes the final model; the val loss
    at start is the final model's first eval, right after its growth (not the small model's eval at the same FLOPs)."""
    def model(unique, logical, n_logical):
        return {'type': 'model', 'iter': 0, 'n_layer': 2, 'n_logical': n_logical, 'params_unique': unique,
                'params_logical': logical, 'params_trainable': unique, 'params_unique_non_embedding': unique,
                'params_logical_non_embedding': logical, 'sampling_bytes_fp32': 4 * unique + 2**20}
    scratch = [model(400, 400, 4)] + evals([(0, 4.0), (10, 3.0), (20, 2.0)])
    small = evals([(0, 4.0), (4, 3.2)])
    grown = [model(200, 200, 2)] + small + [grow(4), model(400, 400, 4)] + evals([(4, 3.5), (12, 2.4), (16, 2.0)])
    for seed in (1, 2):
        write_log(tmp_path / 'runs' / 'scratch' / f's{seed}' / 'log.jsonl', scratch)
        write_log(tmp_path / 'runs' / 'stack' / f's{seed}' / 'log.jsonl', grown)
    write_log(tmp_path / 'runs' / 'tied' / 's1' / 'log.jsonl', [model(200, 400, 4)] + evals([(0, 4.0), (20, 2.2)]))
    csv_path = tmp_path / 'results' / 'sizes.csv'
    text = out(capsys, tmp_path / 'runs', '--at', '1', '--csv', csv_path, '--out', tmp_path / 'p.png')
    res = json.loads(out(capsys, tmp_path / 'runs', '--at', '1', '--json', '--out', tmp_path / 'p.png'))
    rows = {(r['arm'], r['seed']): r for r in res['runs']}
    assert rows['stack', 1]['first_val_loss'] == 3.5 and rows['scratch', 1]['first_val_loss'] == 4.0
    assert rows['stack', 1]['params_unique'] == 400 and rows['tied', 1]['params_logical'] == 400
    assert rows['tied', 1]['n_logical'] == 4 and rows['tied', 1]['sampling_bytes_fp32'] == 800 + 2**20
    assert ('| stack | 4 | 400 | 400 | 400 | 1.00 MiB | 3.5000 ± 0.0000 (n=2) | 2.0000 ± 0.0000 (n=2) | '
            f'{np.exp(2):.4f} ± 0.0000 (n=2) |') in text
    assert '| tied | 4 | 200 | 400 | 200 | 1.00 MiB | 4.0000 (n=1) | 2.2000 (n=1) |' in text
    assert (tmp_path / 'p.png').stat().st_size > 0  # with the parameters panel: the sizes differ
    again = out(capsys, '--from_csv', csv_path)
    assert again.split('\nwrote')[0].strip() == text.split('\nwrote')[0].strip()
    stack = next(r for r in compare.read_curves(compare.curves_path(str(csv_path))) if r['arm'] == 'stack')
    assert [e['stage'] for e in stack['evals']] == [0, 0, 1, 1, 1]


def test_arm_labels_and_config_seeds(tmp_path):
    """label=out_dir names the arm; the seed comes from the out_dir's config.json, so runs pair by it."""
    for name, seed, points in [('a', 7, [(0, 3), (10, 2)]), ('b', 8, [(0, 3), (20, 2)]), ('c', 7, [(0, 3), (5, 2)])]:
        write_log(tmp_path / name / 'log.jsonl', evals(points))
        (tmp_path / name / 'config.json').write_text(json.dumps({'seed': seed, 'out_dir': name}))
    runs = [compare.read_log(f"{arm}={tmp_path / name}") for arm, name in [('scratch', 'a'), ('scratch', 'b'), ('grown', 'c')]]
    assert [(r['arm'], r['seed'], r['label']) for r in runs] == [('scratch', 7, 'scratch/s7'), ('scratch', 8, 'scratch/s8'),
                                                                 ('grown', 7, 'grown/s7')]
    rows = compare.summarize(runs, 'scratch', [1.0], [])
    assert rows[2]['sp@final'] == pytest.approx(10 / 5 - 1)


def test_without_matplotlib_tables_still_come_out(repo, tmp_path):
    fake = tmp_path / 'fake' / 'matplotlib'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text("raise ImportError('no matplotlib here')\n")
    write_log(tmp_path / 'a.jsonl', evals([(0, 3.0), (10, 2.0)]))
    env = {**os.environ, 'PYTHONPATH': f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = run(repo, 'compare.py', tmp_path / 'a.jsonl', '--out', tmp_path / 'c.png', env=env)
    assert '| a (C) |' in r.stdout and 'pip install matplotlib' in r.stderr
    assert not (tmp_path / 'c.png').exists()


def test_bad_inputs_give_one_line_errors(repo, tmp_path):
    (tmp_path / 'empty.jsonl').write_text('')
    (tmp_path / 'bad.jsonl').write_text(json.dumps(evals([(0, 3.0)])[0]) + '\n{"type": "eval", "flops": \n')
    write_log(tmp_path / 'a' / 'log.jsonl', evals([(0, 3.0), (10, 2.0)]))
    (tmp_path / 'notsummary.csv').write_text('arm,seed\nx,1\n')
    (tmp_path / 'nostudy').mkdir()
    out = ['--out', tmp_path / 'x.png', '--csv', tmp_path / 'x.csv']
    cases = [([tmp_path / 'empty.jsonl', *out], 'no eval records'),
             ([tmp_path / 'bad.jsonl', *out], 'bad.jsonl:2'),
             ([tmp_path / 'nolog', *out], 'no such log'),
             ([tmp_path / 'nostudy', *out], '<arm>/s<seed>'),
             ([tmp_path / 'a', f"a={tmp_path / 'a'}", *out], 'name them arm=path'),
             ([tmp_path / 'a', '--scratch', 'zz', *out], "'zz'"),
             ([tmp_path / 'a', '--losses', '2,x', *out], 'comma-separated'),
             ([*out], '--from_csv'),
             (['--from_csv', tmp_path / 'notsummary.csv'], "no column 'scratch_arm'"),
             (['--from_csv', tmp_path / 'missing.csv'], 'missing.csv')]
    compare.main([str(tmp_path / 'a'), '--csv', str(tmp_path / 'good.csv'), '--out', str(tmp_path / 'good.png')])
    (tmp_path / 'good.curves.csv').write_text('arm,seed,flops\nx,1,2\n')
    (tmp_path / 'other.csv').write_text((tmp_path / 'good.csv').read_text())
    (tmp_path / 'other.curves.csv').write_text(','.join(compare.CURVE_FIELDS) + '\nb,1,eval,0,0,0,0,3.0,\n')
    cases += [([tmp_path / 'a', '--arms', 'zz', *out], "--arms: no arm 'zz'"),
              (['--from_csv', tmp_path / 'good.csv'], 'not a compare curves CSV'),
              (['--from_csv', tmp_path / 'other.csv'], 'list different runs')]
    for args, needle in cases:  # in-process: main() exits with the message, as the script does
        with pytest.raises(SystemExit) as e:
            compare.main(list(map(str, args)))
        msg = str(e.value.code)
        assert msg.startswith('error:') and '\n' not in msg and needle in msg, (args, msg)
    assert not (tmp_path / 'x.csv').exists() and not (tmp_path / 'x.png').exists()
    r = run(repo, 'compare.py', tmp_path / 'nolog', ok=False)  # and through the real script
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [r.stderr.strip()] and r.stderr.startswith('error:')


def test_a_half_written_last_record_is_skipped_with_a_note(tmp_path, capsys):
    """A kill during train.py's append leaves the last line cut (no line end): compare.py reads the run without it,
    as train.py's resume does, and says so; a cut line that is not the last is still an error."""
    records = evals([(0, 3.0), (10, 2.5), (20, 2.0)])
    write_log(tmp_path / 'whole' / 'log.jsonl', records)
    whole = (tmp_path / 'whole' / 'log.jsonl').read_text()
    (tmp_path / 'cut').mkdir()
    (tmp_path / 'cut' / 'log.jsonl').write_text(whole + json.dumps(evals([(30, 1.5)])[0])[:25])
    capsys.readouterr()
    run = compare.read_log(str(tmp_path / 'cut'))
    assert "cut/log.jsonl:4: skipped the half-written last record" in capsys.readouterr().err
    assert run['evals'] == compare.read_log(str(tmp_path / 'whole'))['evals']
    (tmp_path / 'cut' / 'log.jsonl').write_text(json.dumps(records[0])[:25] + '\n' + whole)
    with pytest.raises(ValueError, match='log.jsonl:1: malformed log record'):
        compare.read_log(str(tmp_path / 'cut'))
