"""eval.py: perplexity against a plain loop, tied == merged, layer-map sweeps, multiple choice, torchrun, one-line
errors. Its compare subcommand is compare.py's, tested in tests/test_compare.py."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import eval as ev
from model import GPT, GPTConfig

TEXT = "the cat sat on the mat. a dog ran to the sun; the sun was hot! " * 40
CHARS = sorted(set(TEXT))
META = {'tokenizer': 'char', 'vocab_size': len(CHARS), 'dtype': 'uint16', 'chars': CHARS, 'eot': None, 'bos': None}
TINY = dict(block_size=16, vocab_size=len(CHARS), n_layer=3, n_head=2, n_embd=32)


@pytest.fixture
def data(tmp_path):
    d = tmp_path / 'data'
    d.mkdir()
    ids = np.array([CHARS.index(c) for c in TEXT], dtype=np.uint16)
    n = int(0.9 * len(ids))
    ids[:n].tofile(d / 'train.bin')
    ids[n:].tofile(d / 'val.bin')
    (d / 'meta.json').write_text(json.dumps({**META, 'train_tokens': n, 'val_tokens': len(ids) - n}))
    return d


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **kw})).eval()
    with torch.no_grad():  # trained adapters are not identities: make them non-trivial
        for n, p in model.named_parameters():
            if 'lora_B' in n:
                p.normal_(0, 0.05)
            elif 'ia3' in n:
                p.normal_(1, 0.2)
    return model


def save(model, path):
    torch.save({'model': model.state_dict(), 'model_args': model.config.to_dict(), 'tokenizer': META}, path)
    return str(path)


def run(repo, *args, ok=True):
    r = subprocess.run([sys.executable, 'eval.py', *map(str, args)], cwd=repo, capture_output=True, text=True)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def ppl_json(repo, *args):
    return json.loads(run(repo, 'ppl', *args, '--json').stdout)


def test_ppl_is_exp_mean_token_nll(repo, data, tmp_path):
    model = make_model()
    ck = save(model, tmp_path / 'a.pt')
    [row] = ppl_json(repo, ck, '--data', data, '--tokens', 200, '--batch_size', 5)
    ids = torch.from_numpy(np.fromfile(data / 'val.bin', dtype=np.uint16).astype(np.int64))
    nll, n = 0.0, 0
    with torch.no_grad():
        for i in range(200 // 16):  # contiguous non-overlapping windows from the start of the split
            x, y = ids[i * 16:(i + 1) * 16], ids[i * 16 + 1:(i + 1) * 16 + 1]
            logits, _ = model(x[None], y[None])
            nll += F.cross_entropy(logits[0], y, reduction='sum').item()
            n += len(y)
    assert row['tokens'] == n == 192
    assert row['loss'] == pytest.approx(nll / n, rel=1e-5)
    assert row['ppl'] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert row['bpb'] == pytest.approx(nll / n / math.log(2), rel=1e-5)  # one ASCII byte per char token
    # a raw text file is encoded with the checkpoint's tokenizer and scored the same way
    (tmp_path / 'val.txt').write_text(''.join(CHARS[i] for i in ids.tolist()))
    [raw] = ppl_json(repo, ck, '--data', tmp_path / 'val.txt', '--tokens', 200)
    assert raw['loss'] == pytest.approx(row['loss'], rel=1e-6)


def test_tied_adapted_lowrank_model_equals_its_merged_copy(repo, data, tmp_path):
    tied = make_model(n_layer=2, layer_map=[0, 1, 1, 0, 1], lora_rank=2, ia3=True, lowrank_mlp=8)
    a, b = save(tied, tmp_path / 'tied.pt'), save(tied.merged(), tmp_path / 'merged.pt')
    rows = ppl_json(repo, a, b, '--data', data, '--tokens', 240)
    assert rows[0]['tokens'] == rows[1]['tokens'] == 240
    assert rows[0]['ppl'] == pytest.approx(rows[1]['ppl'], rel=1e-5)
    assert rows[0]['params'] < rows[1]['params']  # tied blocks stored once


def test_sweep_identity_reproduces_ppl(repo, data, tmp_path):
    ck = save(make_model(), tmp_path / 'a.pt')
    [own] = ppl_json(repo, ck, '--data', data, '--tokens', 320)
    out = tmp_path / 'sweep' / 'maps.csv'
    r = run(repo, 'sweep', ck, '--data', data, '--tokens', 320, '--maps', '0,1,2; 0,0,1,1,2,2', '--generate', 'methods',
            '--length', 6, '--out', out, '--json')
    rows = json.loads(r.stdout)
    assert rows[0]['label'] == 'base' and rows[0]['ppl'] == pytest.approx(own['ppl'], rel=1e-6)
    identity = next(x for x in rows[1:] if x['map'] == [0, 1, 2])
    assert identity['ppl'] == pytest.approx(own['ppl'], rel=1e-6)
    ppls = [x['ppl'] for x in rows[1:]]
    assert ppls == sorted(ppls)
    assert {'stack', 'interleave', 'interleave_mid'} <= {x['label'] for x in rows}
    lines = out.read_text().splitlines()
    assert lines[0].startswith('label,map,length,loss,ppl') and len(lines) == len(rows) + 1
    assert (tmp_path / 'sweep' / 'maps.png').stat().st_size > 0
    r = run(repo, 'sweep', ck, '--data', data, '--tokens', 320, '--generate', 'any,keep_ends', '--length', 4,
            '--max_maps', 30, '--out', out)
    assert 'keep both ends: ' in r.stdout and 'other maps: ' in r.stdout
    assert 'better than base: ' in r.stdout
    (tmp_path / 'sweep' / 'maps.png').unlink()
    again = run(repo, 'sweep', '--from_csv', out)  # summary and heatmap from the CSV alone: no model, no data
    assert again.stdout == r.stdout and (tmp_path / 'sweep' / 'maps.png').stat().st_size > 0


def test_generated_maps():
    methods = dict((label, m) for label, m in ev.method_maps(4, 8))
    assert methods['stack'] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert methods['interleave'] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert methods['interleave_mid'] == [0, 1, 1, 1, 2, 2, 2, 3]  # ends kept, inner layers stretched
    assert ev.method_maps(4, 6)[2:5] == [('interleave_mid', [0, 1, 1, 2, 2, 3]), ('dus[:2]+[0:]', [0, 1, 0, 1, 2, 3]),
                                         ('dus[:3]+[1:]', [0, 1, 2, 1, 2, 3])]
    mono = ev.keep_end_maps(4, 8, 1000, 0, monotone=True)
    assert len(mono) == math.comb(9, 3) == 84
    assert all(m[0] == 0 and m[-1] == 3 and m == sorted(m) for _, m in mono)
    sample = ev.keep_end_maps(4, 8, 50, seed=1, monotone=False)  # 4**6 = 4096 maps: a seeded sample of 50
    assert len({tuple(m) for _, m in sample}) == 50 and sample == ev.keep_end_maps(4, 8, 50, seed=1, monotone=False)
    assert all(m[0] == 0 and m[-1] == 3 and len(m) == 8 for _, m in sample)
    assert len(ev.keep_end_maps(4, 8, 20, seed=0, monotone=True)) == 20
    every = ev.any_maps(3, 4, 100, seed=0)  # 81 maps: all of them
    assert len({tuple(m) for _, m in every}) == 81 and sum(ev.keeps_ends(m, 3) for _, m in every) == 9
    sample = ev.any_maps(5, 8, 150, seed=2)
    assert len({tuple(m) for _, m in sample}) == 150 and sample == ev.any_maps(5, 8, 150, seed=2)


def test_sweep_summary_compares_maps_that_keep_the_ends_with_the_others():
    rows = [{'map': [0, 1, 1, 2], 'ppl': 5.0}, {'map': [0, 2, 1, 2], 'ppl': 7.0}, {'map': [0, 0, 1, 2], 'ppl': 9.0},
            {'map': [1, 1, 1, 2], 'ppl': 6.0}, {'map': [0, 1, 2, 1], 'ppl': 20.0}]
    s = ev.sweep_summary(rows, 3, base_ppl=6.5)
    assert s['keep both ends'] == {'n': 3, 'best': 5.0, 'median': 7.0}
    assert s['other maps'] == {'n': 2, 'best': 6.0, 'median': 13.0} and s['better than base'] == 2
    assert ev.sweep_summary(rows[:1], 3, 1.0)['other maps'] == {'n': 0}


def test_mc_scores_choices(repo, tmp_path):
    model = make_model(seed=3)
    ck = save(model, tmp_path / 'a.pt')
    enc = lambda s: [CHARS.index(c) for c in s]

    def logprob(context, choice):  # independent: one forward over context+choice, sum over the choice's tokens
        ids = torch.tensor(enc(context + choice))
        with torch.no_grad():
            logits, _ = model(ids[None, :-1], ids[None, 1:])
        lp = F.log_softmax(logits[0], -1)[torch.arange(len(ids) - 1), ids[1:]]
        n = len(choice) + len(context) - len(context.rstrip(' '))  # lm-eval: a context's trailing spaces join the choice
        return lp[-n:].sum().item()

    with torch.no_grad():
        logits, _ = model(torch.tensor([enc('the cat ')]), torch.tensor([enc('he cat s')]))
    greedy = CHARS[logits[0, -1].argmax().item()]
    others = [c for c in 'tmo!' if c != greedy][:2]
    examples = [{'context': 'the cat ', 'choices': [others[0], greedy, others[1]], 'label': 1},  # greedy next char wins
                {'context': 'a dog', 'choices': [' ran', ' sat on', ' was'], 'label': 0},
                {'context': 'the sun', 'choices': [' was hot', ' ran', '!'], 'label': 2}]
    f = tmp_path / 'mc.jsonl'
    f.write_text('\n'.join(json.dumps(e) for e in examples))
    res = json.loads(run(repo, 'mc', ck, '--file', f, '--json').stdout)
    hits = hits_norm = 0
    for ex, pred in zip(examples, res['predictions']):
        lp = [logprob(ex['context'], c) for c in ex['choices']]
        assert pred['logprobs'] == pytest.approx(lp, abs=1e-4)
        hits += int(np.argmax(lp)) == ex['label']
        hits_norm += int(np.argmax([s / len(c) for s, c in zip(lp, ex['choices'])])) == ex['label']
    assert res['predictions'][0]['pred'] == 1
    assert res['n'] == 3 and res['acc'] == pytest.approx(hits / 3) and res['acc_norm'] == pytest.approx(hits_norm / 3)
    scores = lambda *opts: [x for p in json.loads(run(repo, 'mc', ck, '--file', f, '--json', *opts).stdout)['predictions']
                            for x in p['logprobs']]
    for batch_size in ('1', '4'):  # pairs per forward, across examples: the same scores
        assert scores('--batch_size', batch_size) == pytest.approx([x for p in res['predictions'] for x in p['logprobs']], abs=1e-5)
    lp32, lp16 = scores('--dtype', 'float32'), scores('--dtype', 'bfloat16')
    assert lp16 != lp32 and lp16 == pytest.approx(lp32, abs=0.2)  # bf16 autocast ran: rounded, close


def test_ppl_under_torchrun_matches_one_process(repo, data, tmp_path):
    ck = save(make_model(), tmp_path / 'a.pt')
    [one] = ppl_json(repo, ck, '--data', data, '--tokens', 240, '--batch_size', 2)
    cmd = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', 2, 'eval.py', 'ppl', ck, '--data', data,
           '--tokens', 240, '--batch_size', 2, '--json', '--device', 'cpu']
    r = subprocess.run([sys.executable, *map(str, cmd)], cwd=repo, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    [two] = json.loads(r.stdout)
    assert two['tokens'] == one['tokens'] and two['loss'] == pytest.approx(one['loss'], rel=1e-6)


def test_bad_inputs_give_one_line_errors(repo, data, tmp_path):
    ck = save(make_model(), tmp_path / 'a.pt')
    (tmp_path / 'bad.jsonl').write_text('{"context": "a", "choices": ["b"], "label": 0}\n')
    out = ['--out', tmp_path / 'x.csv']
    cases = [(['ppl', ck, '--data', tmp_path / 'nodata'], 'nodata'),
             (['ppl', ck, '--data', data, '--split', 'test'], 'test.bin'),
             (['sweep', ck, '--data', data, '--maps', '0,1,3', *out], 'layer 3'),
             (['sweep', ck, '--data', data, '--maps', '0,x,1', *out], 'non-integer'),
             (['sweep', ck, '--data', data, '--generate', 'bogus', *out], 'bogus'),
             (['mc', ck, '--file', tmp_path / 'bad.jsonl'], 'bad.jsonl:1')]
    for args, needle in cases:  # in-process: main() exits with the message, as the script does
        with pytest.raises(SystemExit) as e:
            ev.main(list(map(str, args)))
        msg = str(e.value.code)
        assert msg.startswith('error:') and '\n' not in msg and needle in msg, (args, msg)
    assert not (tmp_path / 'x.csv').exists()
    r = run(repo, 'ppl', tmp_path / 'missing.pt', '--data', data, ok=False)  # and through the real script
    assert r.returncode != 0 and r.stderr.strip().splitlines() == [r.stderr.strip()] and 'missing.pt' in r.stderr
    assert r.stderr.startswith('error:')
