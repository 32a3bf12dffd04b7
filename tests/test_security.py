"""No code runs from a sharded checkpoint (.dcp) a user got from elsewhere. A real FSDP run (torchrun, one
process, gloo) writes last.dcp; copies of it carry a payload in their .metadata, in their extra.pt, or as a
value the optimizer's state reads, and every entry point that accepts a .dcp is run on them as a user runs
it: the payload never runs, the exit is non-zero, with exactly one `error:` line and no traceback. Control
tests show that the same files do run the payload under plain pickle / torch's own DCP reader."""
import dataclasses
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

import parallel

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
CHARS = sorted(set('the quick brown fox jumps over a lazy dog\n'))
RUN = ['--n_layer=2', '--n_head=2', '--n_embd=16', '--block_size=16', '--batch_size=2', '--gradient_accumulation_steps=1',
       '--max_iters=2', '--eval_iters=1', '--eval_interval=2', '--warmup_iters=0', '--lr_decay_iters=2', '--progress=False',
       '--device=cpu']


class Payload:
    """Unpickling this creates the marker file: the proof that a loader ran code from a file."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, 'w')


def run(*cmd):
    return subprocess.run([sys.executable, *map(str, cmd)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def plant(good, bad, marker, where):
    """A copy of the sharded checkpoint `good` at `bad`, with the payload in `where`."""
    shutil.copytree(good, bad)
    with open(bad / '.metadata', 'rb') as f:
        metadata = pickle.load(f)  # our own run's file
    if where == 'metadata':
        metadata.planner_data = Payload(marker)
    elif where == 'extra':
        extra = torch.load(bad / 'extra.pt', weights_only=True)
        torch.save({**extra, 'config': Payload(marker)}, bad / 'extra.pt')
    elif where == 'value':  # the embedding, declared a non-tensor value: DCP's planner would torch.load it unrestricted
        torch.save(Payload(marker), bad / 'value.distcp')
        fqn = 'model.transformer.wte.weight'
        metadata.state_dict_metadata[fqn] = BytesStorageMetadata()
        index = next(i for i in metadata.storage_data if i.fqn == fqn)
        info = dataclasses.replace(metadata.storage_data.pop(index), relative_path='value.distcp', offset=0,
                                   length=(bad / 'value.distcp').stat().st_size)
        metadata.storage_data[MetadataIndex(fqn)] = info
    with open(bad / '.metadata', 'wb') as f:
        pickle.dump(metadata, f)
    return bad


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp('security')
    (r / 'data').mkdir()
    ids = np.array([CHARS.index(c) for c in 'the quick brown fox jumps over a lazy dog\n' * 100], dtype=np.uint16)
    ids[:3000].tofile(r / 'data' / 'train.bin')
    ids[3000:].tofile(r / 'data' / 'val.bin')
    (r / 'data' / 'meta.json').write_text(json.dumps(dict(tokenizer='char', vocab_size=len(CHARS), dtype='uint16', chars=CHARS)))
    p = run('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1', 'train.py', f'--data_dir={r / "data"}',
            f'--out_dir={r / "run"}', '--fsdp=True', *RUN)
    assert p.returncode == 0, p.stderr[-3000:]
    good = (r / 'run' / 'last.dcp').resolve()
    for where in ('metadata', 'extra', 'value'):
        plant(good, r / f'{where}.dcp', r / 'PWNED', where)
        for candidates in ('dcp', 'pt_and_dcp'):  # a run dir: last.dcp alone, or beside an older last.pt
            d = r / f'run_{where}_{candidates}'
            d.mkdir()
            if candidates == 'pt_and_dcp':
                (d / 'last.pt').write_bytes(b'older')
                os.utime(d / 'last.pt', (0, 0))
            (d / 'last.dcp').symlink_to(r / f'{where}.dcp')
    return r


def entry_points(r, dcp):
    """Every command that reads a .dcp given as a model (and the run directory train.py resumes from)."""
    (r / f'{dcp.name}.yml').write_text(f"slices:\n  - sources:\n      - model: {dcp}\n        layer_range: [0, 2]\n")
    where = dcp.name[:-len('.dcp')]
    return {
        'sample': ['sample.py', f'--init_from={dcp}', '--num_samples=1', '--max_new_tokens=3', '--device=cpu'],
        'eval': ['eval.py', 'ppl', dcp, '--data', r / 'data', '--tokens', '32', '--device', 'cpu'],
        'grow': ['grow.py', dcp, '--method', 'stack', '--out', r / 'out' / 'g.pt'],
        'grow-yaml': ['grow.py', '--method', 'map', '--yaml', r / f'{dcp.name}.yml', '--out', r / 'out' / 'g.pt'],
        'train-resume-dcp': ['train.py', '--init_from=resume', f'--out_dir={r / f"run_{where}_dcp"}', '--fsdp=False'],
        'train-resume-pt-and-dcp': ['train.py', '--init_from=resume', f'--out_dir={r / f"run_{where}_pt_and_dcp"}', '--fsdp=False'],
        'train-init-from': ['train.py', f'--data_dir={r / "data"}', f'--out_dir={r / "out" / "run"}', f'--init_from={dcp}', *RUN],
        'parallel': ['parallel.py', dcp, r / 'out' / 'c.pt'],
        'convert': ['convert.py', 'export', dcp, '--out', r / 'out' / 'hf'],
    }


@pytest.mark.parametrize('where', ['metadata', 'extra'])
def test_no_entry_point_runs_a_payload_in_a_sharded_checkpoint(root, where):
    for name, cmd in entry_points(root, root / f'{where}.dcp').items():
        lines = refused(root, name, cmd)
        assert 'refused for safety' in lines[-1] and 'weights_only' not in lines[-1], (name, lines[-1])


def test_no_entry_point_runs_a_payload_planted_as_a_value(root):
    """Resuming reads the value into the model, and is refused as it reads it; the scripts that gather the
    model refuse the checkpoint earlier (its embedding is no tensor), before reading any value."""
    for name, cmd in entry_points(root, root / 'value.dcp').items():
        if name.startswith('train-resume') or name == 'parallel':
            lines = refused(root, name, cmd)
            assert ('value model.transformer.wte.weight: refused for safety: it holds Python objects such as io.open' if name.startswith('train') else 'is not a tensor') in lines[-1], lines


def refused(root, name, cmd):
    """Run cmd; it must fail with one error line and no traceback, run no payload and write no output. -> stderr lines"""
    p = run(*cmd)
    lines = p.stderr.strip().splitlines()
    assert not (root / 'PWNED').exists(), f"{name} ran the payload"
    assert p.returncode != 0 and 'Traceback' not in p.stderr + p.stdout, (name, p.stderr[-3000:])
    assert [l for l in lines if l.startswith('error:')] == lines[-1:], (name, p.stderr[-2000:])
    assert not (root / 'out').exists(), f"{name} wrote output"
    return lines


@pytest.mark.filterwarnings('ignore:torch.distributed is disabled')
def test_the_payloads_do_run_under_plain_pickle_and_torchs_own_reader(root):
    """The control: without the restricted readers each planted file runs its payload."""
    import torch.distributed.checkpoint as dcp
    marker = root / 'PWNED'
    from checkpoint import build_model
    model = build_model(parallel.consolidate(root / 'run' / 'last.dcp'))
    for load in (lambda: pickle.load(open(root / 'metadata.dcp' / '.metadata', 'rb')),
                 lambda: dcp.FileSystemReader(root / 'metadata.dcp').read_metadata(),
                 lambda: torch.load(root / 'extra.dcp' / 'extra.pt', weights_only=False),
                 lambda: dcp.load({'model': model.state_dict()}, storage_reader=parallel.SafeReader(root / 'value.dcp'),
                                  no_dist=True)):  # the metadata read safely, the value by DCP's default planner
        try:
            load()
        except (Exception, dcp.CheckpointException):  # the payload runs while unpickling; what it returns is no metadata, no tensor
            pass
        assert marker.exists()
        marker.unlink()


def test_a_shard_file_outside_the_checkpoint_is_refused(root, tmp_path):
    bad = tmp_path / 'escape.dcp'
    shutil.copytree(root / 'run' / 'last.dcp', bad)
    with open(bad / '.metadata', 'rb') as f:
        metadata = pickle.load(f)
    index = next(iter(metadata.storage_data))
    metadata.storage_data[index] = dataclasses.replace(metadata.storage_data[index], relative_path='../../secret')
    with open(bad / '.metadata', 'wb') as f:
        pickle.dump(metadata, f)
    with pytest.raises(ValueError, match="names a shard file '../../secret' outside its directory"):
        parallel.consolidate(bad)


def test_a_hugging_face_tokenizer_config_that_is_no_tokenizer_is_one_error(tmp_path):
    """Found in the audit of the other inputs: a non-object nanogrow_tokenizer in tokenizer_config.json was a traceback."""
    from convert import import_tokenizer
    for bad in ([1], 'gpt2', {'tokenizer': 'char', 'vocab_size': 0}):
        (tmp_path / 'tokenizer_config.json').write_text(json.dumps({'nanogrow_tokenizer': bad}))
        with pytest.raises(ValueError, match='tokenizer_config.json: nanogrow_tokenizer'):
            import_tokenizer(str(tmp_path), {})
