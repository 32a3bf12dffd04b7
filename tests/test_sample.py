"""sample.py: greedy samples equal the model's own greedy generation, any model spec, one-line errors."""
import subprocess
import sys

import torch

from checkpoint import make_checkpoint, save_checkpoint
from model import GPT, GPTConfig
from tokenizer import get_tokenizer

CHARS = sorted(set('the quick brown fox jumps over a lazy dog\n'))
META = {'tokenizer': 'char', 'vocab_size': len(CHARS), 'chars': CHARS, 'dtype': 'uint16', 'eot': None, 'bos': None}


def run(repo, *args):
    return subprocess.run([sys.executable, 'sample.py', '--device=cpu', '--dtype=float32', *args], cwd=repo,
                          capture_output=True, text=True, timeout=120, env={'OMP_NUM_THREADS': '1', 'PATH': ''})


def test_greedy_sample_is_the_models_greedy_generation(repo, tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=len(CHARS), layer_map=[0, 1, 1])).eval()
    save_checkpoint(make_checkpoint(model.state_dict(), model.config.to_dict(), tokenizer=META), tmp_path / 'run' / 'best.pt')
    tok = get_tokenizer(META)
    want = tok.decode(model.generate(torch.tensor([tok.encode('the quick')]), 40, temperature=0)[0].tolist())
    for spec in (f'--init_from={tmp_path / "run" / "best.pt"}', f'--out_dir={tmp_path / "run"}'):
        p = run(repo, spec, '--start=the quick', '--num_samples=2', '--max_new_tokens=40', '--temperature=0')
        assert p.returncode == 0, p.stderr
        assert p.stdout.split('---------------\n')[:2] == [want + '\n'] * 2  # past block_size: the window slides


def test_missing_checkpoint_is_one_line_error(repo, tmp_path):
    p = run(repo, f'--out_dir={tmp_path}/nope')
    lines = p.stderr.strip().splitlines()  # diagnostics (the config echo) may come first; one error, last
    assert p.returncode != 0 and lines[-1].startswith('error:') and 'not found' in lines[-1], p.stderr
    assert sum(l.startswith('error:') for l in lines) == 1 and 'Traceback' not in p.stderr
