"""frontier.py on synthetic study results with a known answer: the isoFLOP parabola's optimum and loss per seed, the
frontier interpolated in log C, growth runs against it (dL, sp_front with seeds that never reach the frontier counted,
sp_equiv), the --budget answer, the figure, and one-line errors."""
import math
import subprocess
import sys

import numpy as np
import pytest

import compare
import frontier

BUDGETS = [1e10, 4e10, 1.6e11]
SIZES = [1000, 2000, 4000, 8000]


def front_loss(c, seed):
    """The synthetic frontier: linear in log C, 0.1 lower per 4x, seed s shifted by 0.01 s."""
    return 2 - 0.1 * math.log(c / 1e10, 4) + 0.01 * seed


def n_opt(c):
    return 2000 * math.sqrt(c / 1e10)


def run(arm, seed, points, n, grows=()):
    evals = [{'flops': f, 'tokens': f / 6 / n, 'elapsed': 1.0, 'val_loss': l, 'iter': i, 'stage': sum(g['flops'] <= f for g in grows)}
             for i, (f, l) in enumerate(points)]
    model = {'n_logical': 1.0, 'params_unique': n, 'params_logical': n, 'params_trainable': n, 'sampling_bytes_fp32': 4.0 * n,
             'params_logical_non_embedding': n}
    return {'arm': arm, 'seed': seed, 'label': f'{arm}/s{seed}', 'path': '-', 'evals': evals, 'model': model,
            'grows': [dict(g, tokens=0.0, iter=1, elapsed=0.0, operator_flops=0.0) for g in grows]}


@pytest.fixture
def study(tmp_path):
    runs = []
    for c in BUDGETS:
        tag = f"{c:g}".replace('e+', 'e')
        for seed in (1, 2, 3):
            for n in SIZES:  # an exact parabola in log N around n_opt(c)
                final = front_loss(c, seed) + 0.2 * math.log(n / n_opt(c)) ** 2
                runs.append(run(f'c{tag}_L{n // 1000}', seed, [(0, 4.0), (c, final)], n))
    c = 4e10  # growth at the middle budget: one recipe 0.05 below the frontier, one 0.1 above
    for seed in (1, 2, 3):
        target = front_loss(c, seed)
        runs.append(run('c4e10_stack', seed, [(0, 4.0), (c / 2, target + 0.45), (c, target - 0.05)], 8000,
                        grows=[{'flops': c / 4}]))
        runs.append(run('c4e10_late', seed, [(0, 4.0), (c, target + 0.1)], 8000, grows=[{'flops': c / 2}]))
    rows = compare.summarize(runs, 'c1e10_L1', [1.0], [])
    path = tmp_path / 'study.csv'
    compare.write_csv(path, rows, compare.target_keys([1.0], []))
    compare.write_curves(compare.curves_path(path), runs)
    return path


def load(path):
    rows, _ = compare.read_csv(path)
    front = frontier.fit_frontier(rows)
    return front, frontier.growth_rows(rows, compare.read_curves(compare.curves_path(path)), front)


def test_isoflop_parabola_gives_the_optimum_per_seed(study):
    front, _ = load(study)
    assert list(front) == BUDGETS
    for c, f in front.items():
        for seed, (log_n, loss, interior) in f['seeds'].items():
            assert interior and math.exp(log_n) == pytest.approx(n_opt(c), rel=1e-6)
            assert loss == pytest.approx(front_loss(c, seed), abs=1e-9)
    points = frontier.frontier_points(front, seed=2)
    assert frontier.loss_at(points, math.log(8e10)) == (pytest.approx(front_loss(8e10, 2)), False)
    assert frontier.compute_for(points, front_loss(8e10, 2)) == (pytest.approx(8e10), False)
    assert frontier.compute_for(points, front_loss(6.4e11, 2)) == (pytest.approx(6.4e11), True)  # beyond: marked


def test_growth_against_the_frontier_of_its_own_seed(study):
    _, grown = load(study)
    stack = [g for g in grown if g['recipe'] == 'stack']
    late = [g for g in grown if g['recipe'] == 'late']
    assert len(stack) == len(late) == 3
    for g in stack:  # 0.05 below the frontier: the frontier needs 4^(0.05/0.1) = 2x the compute for that loss
        assert g['dL'] == pytest.approx(-0.05) and g['sp_equiv'] == pytest.approx(1.0)
        # it first reaches L_front(4e10) between its evals at 2e10 (target + 0.45) and 4e10 (target - 0.05)
        assert g['sp_front'] == pytest.approx(4e10 / (2e10 + 0.45 / 0.5 * 2e10) - 1) and not g['never']
        # against the scratch run of its final size (8000) at 4e10: 0.2 ln(8000 / 4000)^2 above the frontier
        assert g['dL_size'] == pytest.approx(-0.05 - 0.2 * math.log(2) ** 2)
    for g in late:  # never reaches L_front: counted, with the compute the frontier needs for its loss
        assert g['never'] and g['sp_front'] is None
        assert g['dL'] == pytest.approx(0.1) and g['sp_equiv'] == pytest.approx(4 ** -1 - 1)


def test_cli_tables_budget_answer_and_figure(study, repo):
    p = subprocess.run([sys.executable, 'frontier.py', str(study), '--train_tokens', '1e6'], cwd=repo, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    assert 'C = 4e+10' in p.stdout and '| stack |' in p.stdout and '3 never reach' in p.stdout
    assert '+100.0% ± 0.0% (n=3)' in p.stdout and '-0.0500 ± 0.0000 (n=3)' in p.stdout
    assert study.with_suffix('.png').is_file()
    p = subprocess.run([sys.executable, 'frontier.py', str(study), '--budget', '5e10'], cwd=repo, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert f"N_opt = {n_opt(5e10):,.0f}" in p.stdout and 'C^0.50' in p.stdout
    assert 'at C = 4e+10: stack' in p.stdout and '-> grow' in p.stdout


def test_bad_inputs_are_one_line_errors(study, repo, tmp_path):
    text = study.read_text()
    bad = {'name': text.replace('c1e10_L1', 'small', 1), 'few': '\n'.join(l for l in text.splitlines()
                                                                          if not l.startswith(('c1e10_L2', 'c1e10_L4')))}
    for kind, content in bad.items():
        path = tmp_path / f'{kind}.csv'
        path.write_text(content)
        p = subprocess.run([sys.executable, 'frontier.py', str(path)], cwd=repo, capture_output=True, text=True)
        assert p.returncode != 0 and p.stderr.count('\n') == 1 and p.stderr.startswith('error:'), p.stderr
    p = subprocess.run([sys.executable, 'frontier.py', str(study), '--budget', '-1'], cwd=repo, capture_output=True, text=True)
    assert p.returncode != 0 and p.stderr.startswith('error: --budget'), p.stderr
