"""Bad inputs and faults, run as a hostile user runs the scripts: each table case is a subprocess of train.py,
sample.py, eval.py, convert.py, grow.py, study.py, compare.py or a data prep script, run in its own copy of the
fixture tree (two at a time), that must exit non-zero with exactly one `error:` line (the last line of stderr), no
traceback, no new file and no changed file anywhere in that tree. Then the faults: a pickle payload through every loader, kill -9 during a save
then resume, NaN, and a full disk."""
import hashlib
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint import load_any, load_checkpoint, make_checkpoint, run_checkpoint, save_checkpoint
from model import GPT, GPTConfig

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
TEXT = 'the quick brown fox jumps over a lazy dog\n' * 300
CHARS = sorted(set(TEXT))
V = len(CHARS)
META = dict(tokenizer='char', vocab_size=V, dtype='uint16', chars=CHARS, path=None, eot=None, bos=None)
TINY = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=V)
TRAIN = ['train.py', '--data_dir={root}/data', '--out_dir={root}/out', '--n_layer=2', '--n_head=2', '--n_embd=16',
         '--block_size=16', '--batch_size=2', '--gradient_accumulation_steps=1', '--max_iters=2', '--eval_iters=1',
         '--eval_interval=1', '--warmup_iters=0', '--lr_decay_iters=2', '--progress=False', '--device=cpu']
SAMPLE = ['sample.py', '--device=cpu', '--num_samples=1', '--max_new_tokens=4', '--init_from={root}/ckpt.pt']
PPL = ['eval.py', 'ppl', '--device', 'cpu', '--data', '{root}/data']
LIGO = ['grow.py', '--method', 'ligo', '--data', '{root}/data', '--ligo_steps', '1']
SWEEP = ['eval.py', 'sweep', '{root}/ckpt.pt', '--device', 'cpu', '--data', '{root}/data', '--maps', '0,1,1']


class Payload:
    """Unpickling this makes a directory: the proof that a loader ran code from a file."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def tiny_checkpoint(**fields):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    return make_checkpoint(model.state_dict(), model.config.to_dict(), **{'tokenizer': META, **fields})


def write_data(d, ids=None, meta=META, train=None, val=None):
    d.mkdir()
    ids = np.array([CHARS.index(c) for c in TEXT], dtype=np.uint16) if ids is None else ids
    (d / 'train.bin').write_bytes(ids[:10000].tobytes() if train is None else train)
    (d / 'val.bin').write_bytes(ids[10000:].tobytes() if val is None else val)
    if meta is not None:
        (d / 'meta.json').write_text(meta if isinstance(meta, str) else json.dumps(meta))


def write_llama2c(path, n_layer=1, dim=8, hidden=16, heads=2, vocab=V, seq=8):
    """A legacy llama2.c file of zeros with the given header (convert.py's layout)."""
    hd = dim // heads
    n = vocab * dim + n_layer * (2 * dim + 4 * dim * dim + 3 * hidden * dim) + dim + seq * hd
    path.write_bytes(struct.pack('<7i', dim, hidden, n_layer, heads, heads, vocab, seq) + bytes(4 * max(n, 0)))


GPT2_CONFIG = dict(model_type='gpt2', n_positions=16, vocab_size=V, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    """Every input the cases use; the cases write only below it, and must write nothing."""
    r = tmp_path_factory.mktemp('hostile')
    write_data(r / 'data')
    good = tiny_checkpoint()
    save_checkpoint(good, r / 'ckpt.pt')
    save_checkpoint(good, r / 'grown' / 'last.pt')  # make_checkpoint alone: weights, no training state (grow.py's kind)
    torch.save({'model': Payload(r / 'PWNED'), 'model_args': TINY}, r / 'payload.pt')
    (r / 'payload_run').mkdir()
    (r / 'payload_run' / 'last.pt').write_bytes((r / 'payload.pt').read_bytes())
    (r / 'empty.pt').write_bytes(b'')
    (r / 'text.pt').write_text('this is not a checkpoint\n')
    torch.save([1, 2, 3], r / 'list.pt')
    torch.save({'model': good['model'], 'model_args': [2, 2, 16]}, r / 'margs_list.pt')
    torch.save({'model': good['model'], 'model_args': {**TINY, 'n_head': 0}}, r / 'margs_nhead0.pt')
    torch.save({'model': good['model'], 'model_args': {**TINY, 'n_embd': 32}}, r / 'shape.pt')
    torch.save({**good, 'tokenizer': None}, r / 'notok.pt')
    torch.save({**good, 'tokenizer': {'tokenizer': 'char', 'vocab_size': V}}, r / 'badtok.pt')
    other = CHARS[:-1] + ['Z']  # same size, one character differs: the ids mean other characters
    torch.save({**good, 'tokenizer': {**META, 'chars': other}}, r / 'othervocab.pt')
    write_data(r / 'd_badjson', meta='{"tokenizer": "char", ')
    write_data(r / 'd_obj', meta={})
    write_data(r / 'd_list', meta=[])
    write_data(r / 'd_smallvocab', meta={**META, 'vocab_size': 5, 'chars': CHARS[:5]})
    write_data(r / 'd_dtype', meta={**META, 'dtype': 'float64'})
    write_data(r / 'd_emptytrain', train=b'')
    write_data(r / 'd_odd', train=b'\x01\x00\x02\x00\x03')
    write_data(r / 'd_short', val=np.arange(5, dtype=np.uint16).tobytes())
    write_data(r / 'd_nometa', meta=None)
    (r / 'cfg_nhead0.py').write_text('n_head = 0\n')
    (r / 'cfg_syntax.py').write_text('n_head = (\n')
    (r / 'maps.txt').write_text('0,1\n')
    (r / 'mc.jsonl').write_text(json.dumps({'context': 'the', 'choices': [' fox', ' dog'], 'label': 0}) + '\n')
    for name, cfg in (('hf_list', []), ('hf_nhead0', {**GPT2_CONFIG, 'n_head': 0}), ('hf_index', GPT2_CONFIG),
                      ('hf_payload', GPT2_CONFIG)):
        (r / name).mkdir()
        (r / name / 'config.json').write_text(json.dumps(cfg))
    (r / 'hf_badjson').mkdir()
    (r / 'hf_badjson' / 'config.json').write_text('{"model_type": ')
    (r / 'hf_index' / 'model.safetensors.index.json').write_text(json.dumps({'metadata': {}}))
    torch.save({'transformer.wte.weight': Payload(r / 'PWNED')}, r / 'hf_payload' / 'pytorch_model.bin')
    write_llama2c(r / 'tiny.bin')
    write_llama2c(r / 'l2c_zero.bin', n_layer=0)
    write_study_inputs(r)
    write_compare_inputs(r)
    write_text_inputs(r)
    return r


def write_study_inputs(r):
    """Study files (run with the fixture tree as the working directory: runs/, results/ are below it)."""
    (r / 'st_base.py').write_text('# a train.py config file\n')
    good = dict(name='good', base='st_base.py', seeds=[1], arms={'scratch': {}, 'small': {'n_layer': 1}})
    studies = {'st_good': {}, 'st_typo': dict(arms={'scratch': {}, 'small': {'n_layr': 1}}),
               'st_typo_model': dict(arms={'scratch': {'lora_rnak': 2}}), 'st_dotdot': dict(name='..'),
               'st_dot': dict(name='.'), 'st_arm_dotdot': dict(arms={'scratch': {}, '..': {}}),
               'st_unknown': dict(arm={}), 'st_noarms': dict(arms={}), 'st_seeds': dict(seeds=['1']),
               'st_noscratch': dict(arms={'small': {}}), 'st_armlist': dict(arms={'scratch': [('n_layer', 1)]}),
               'st_outdir': dict(arms={'scratch': {'out_dir': 'x'}}), 'st_nobase': dict(base='nope.py'),
               'st_cycle': dict(arms={'scratch': {'after': ['b']}, 'b': {'after': ['scratch']}}),
               'st_after_str': dict(arms={'scratch': {}, 'b': {'after': 'scratch'}}),
               'st_losses': dict(losses=['low']), 'st_rec': dict(name='rec'), 'st_done': dict(name='dj')}
    for name, changes in studies.items():
        (r / f'{name}.py').write_text(''.join(f"{k} = {v!r}\n" for k, v in {**good, **changes}.items()))
    (r / 'st_syntax.py').write_text("name = 'x\n")
    (r / 'results').mkdir()  # an earlier session's results, with a merge conflict in runs.json
    (r / 'results' / 'rec.runs.json').write_text('{\n<<<<<<< HEAD\n  "scratch/s1": {}\n=======\n  "scratch/s1": {"x": 1}\n>>>>>>> other\n}\n')
    run = r / 'runs' / 'dj' / 'scratch' / 's1'
    run.mkdir(parents=True)
    (run / 'done.json').write_bytes(bytes(range(256)))


def eval_records(seed, speed):
    return ''.join(json.dumps({'type': 'eval', 'iter': i, 'tokens': 100 * f, 'flops': f, 'val_loss': 2 + 2 * math.exp(-f * speed / 10),
                               'elapsed': f / 10}) + '\n' for i, f in enumerate(range(0, 101, 10)))


def write_compare_inputs(r):
    """A study dir of two runs, its summary and curves CSVs, and damaged copies of each."""
    import compare
    for arm, speed in (('scratch', 1.0), ('fast', 2.0)):
        run = r / 'cmp' / arm / 's1'
        run.mkdir(parents=True)
        (run / 'log.jsonl').write_text(eval_records(1, speed))
        (run / 'config.json').write_text(json.dumps({'seed': 1}))
    runs = [compare.read_log(str(r / 'cmp' / arm / 's1')) for arm in ('scratch', 'fast')]
    rows = compare.summarize(runs, 'scratch', [0.5, 1.0], [])
    compare.write_csv(str(r / 'sum.csv'), rows, compare.target_keys([0.5, 1.0], []))
    compare.write_curves(str(r / 'sum.curves.csv'), runs)
    text = (r / 'sum.csv').read_text()
    header, *lines = text.splitlines(keepends=True)
    columns = header.strip().split(',')
    def without(drop):  # the CSV without the columns `drop` picks
        keep = [i for i, c in enumerate(columns) if not drop(c)]
        return ''.join(','.join(line.rstrip('\r\n').split(',')[i] for i in keep) + '\r\n' for line in [header, *lines])
    (r / 'sum_nosp.csv').write_text(without(lambda c: c.startswith(('sp@', 'loss@'))))
    (r / 'sum_nofinal.csv').write_text(without(lambda c: c.endswith('@final')))
    (r / 'sum_cut.csv').write_text(text[:-9])
    (r / 'sum_cut_row.csv').write_text(header + lines[0] + lines[1][:len(lines[1]) // 2] + '\r\n')
    (r / 'sum_extra.csv').write_text(header + lines[0] + lines[1].rstrip() + ',9\r\n')
    (r / 'sum_conflict.csv').write_text(header + '<<<<<<< HEAD\n' + lines[0] + '=======\n' + lines[1] + '>>>>>>> b\n')
    (r / 'sum_nul.csv').write_text(header + lines[0].replace(',', ',\0', 1) + lines[1])
    (r / 'sum_binary.csv').write_bytes(bytes(range(256)) * 4)
    (r / 'cc.csv').write_text(text)
    (r / 'cc.curves.csv').write_text((r / 'sum.curves.csv').read_text()[:-7])
    for name in ('rec.csv', 'rec.curves.csv'):  # the results study st_rec.py finds
        (r / 'results' / name).write_text((r / ('sum' + name[3:])).read_text())
    bad = {'log_binary': b'\x80\x81\x00' * 100, 'log_middle': (eval_records(1, 1.0)[:40] + '\n' + eval_records(1, 1.0)).encode(),
           'log_noeval': b'{"type": "train", "iter": 0}\n'}
    for name, blob in bad.items():
        (r / name).mkdir()
        (r / name / 'log.jsonl').write_bytes(blob)
    (r / 'log_conflict_cfg').mkdir()
    (r / 'log_conflict_cfg' / 'log.jsonl').write_text(eval_records(1, 1.0))
    (r / 'log_conflict_cfg' / 'config.json').write_text('<<<<<<< HEAD\n{"seed": 1}\n=======\n{"seed": 2}\n>>>>>>> b\n')


def write_text_inputs(r):
    """Inputs of the data prep scripts, eval.py mc and grow.py --yaml."""
    (r / 'empty.txt').write_text('')
    (r / 'binary.txt').write_bytes(bytes(range(256)) * 4)
    many = ''.join(chr(i) for i in range(32, 32 + 70_000) if not 0xD800 <= i < 0xE000)  # > 65,536 distinct characters
    (r / 'many_chars.txt').write_text(many, encoding='utf-8')
    (r / 'stories.txt').write_text('Once upon a time there was a fox.\n\nThe dog slept.\n\n' * 20)
    (r / 'docs.jsonl').write_text(json.dumps({'text': TEXT}) + '\n')
    for name, state in (('web_corrupt', b'{"settings": {"files": ['), ('web_list', b'[1, 2]'), ('web_binary', bytes(range(256)))):
        (r / name).mkdir()
        (r / name / 'prepare_state.json').write_bytes(state)
    mc = {'mc_numbers.jsonl': {'context': 'the', 'choices': [1, 2], 'label': 0},
          'mc_string.jsonl': {'context': 'the', 'choices': ' fox', 'label': 0},
          'mc_one.jsonl': {'context': 'the', 'choices': [' fox'], 'label': 0},
          'mc_label.jsonl': {'context': 'the', 'choices': [' fox', ' dog'], 'label': 2},
          'mc_nocontext.jsonl': {'choices': [' fox', ' dog'], 'label': 0}}
    for name, ex in mc.items():
        (r / name).write_text(json.dumps(ex) + '\n')
    (r / 'mc_binary.jsonl').write_bytes(b'\xff\xfe' * 50)
    (r / 'slices.yml').write_text(f"slices:\n  - sources:\n      - model: {r / 'ckpt.pt'}\n        layer_range: [0, 2]\n")


# (id, command, a substring the error line must contain); '{root}' is the fixture tree
CASES = [
    # train.py: model shape values, from the command line, a config file and a checkpoint's model_args
    ('train-n_head-0', [*TRAIN, '--n_head=0'], 'n_head must be a positive integer'),
    ('train-block_size-0', [*TRAIN, '--block_size=0'], 'block_size must be a positive integer'),
    ('train-block_size-neg', [*TRAIN, '--block_size=-1'], 'block_size must be a positive integer'),
    ('train-n_embd-0', [*TRAIN, '--n_embd=0'], 'n_embd must be a positive integer'),
    ('train-n_layer-neg', [*TRAIN, '--n_layer=-1'], 'n_layer must be a positive integer'),
    ('train-vocab_size-0', [*TRAIN, '--vocab_size=0'], 'vocab_size must be a positive integer'),
    ('train-dead-blocks', [*TRAIN, '--n_layer=12', '--layer_map=[0,1,2,3,0,1,2,3,0,1,2,3]'],
     'never runs block(s) [4, 5, 6, 7, 8, 9, 10, 11] of the 12 stored'),
    ('train-dead-blocks-renumber', [*TRAIN, '--n_layer=4', '--layer_map=[0,2,0,2]'], 'layer_map=[0, 1, 0, 1]'),
    ('train-config-file-n_head-0', [*TRAIN, '{root}/cfg_nhead0.py'], 'n_head must be a positive integer'),
    ('train-config-file-syntax', [*TRAIN, '{root}/cfg_syntax.py'], 'cfg_syntax.py'),
    # train.py: run options
    ('train-batch_size-0', [*TRAIN, '--batch_size=0'], 'batch_size must be >= 1'),
    ('train-max_iters-neg', [*TRAIN, '--max_iters=-1'], 'max_iters must be >= 0'),
    ('train-learning_rate-neg', [*TRAIN, '--learning_rate=-1'], 'learning_rate must be > 0'),
    ('train-grow_method-typo', [*TRAIN, '--grow_method=stakc'], "unknown growth method 'stakc'"),
    ('train-train_only-regex', [*TRAIN, '--train_only=('], 'train_only'),
    # train.py: output paths
    ('train-out_dir-is-file', [*TRAIN, '--out_dir={root}/ckpt.pt'], 'exists and is a file'),
    ('train-out_dir-below-file', [*TRAIN, '--out_dir={root}/ckpt.pt/run'], 'which is a file'),
    # train.py: checkpoint kinds and files that are not checkpoints
    ('train-resume-missing', [*TRAIN, '--init_from=resume', '--out_dir={root}/nothing'], 'checkpoint not found'),
    ('train-resume-grown', [*TRAIN, '--init_from=resume', '--out_dir={root}/grown'], 'no training state to resume'),
    ('train-init-payload', [*TRAIN, '--init_from={root}/payload.pt'], 'refused for safety'),
    ('train-resume-payload', [*TRAIN, '--init_from=resume', '--out_dir={root}/payload_run'], 'refused for safety'),
    ('train-init-empty', [*TRAIN, '--init_from={root}/empty.pt'], 'an empty file, not a nanogrow checkpoint'),
    ('train-init-text', [*TRAIN, '--init_from={root}/text.pt'], 'not a nanogrow checkpoint'),
    ('train-init-list', [*TRAIN, '--init_from={root}/list.pt'], 'not a nanogrow checkpoint'),
    ('train-init-model_args-list', [*TRAIN, '--init_from={root}/margs_list.pt'], "'model_args' must be a dict"),
    ('train-init-model_args-n_head-0', [*TRAIN, '--init_from={root}/margs_nhead0.pt'], 'model_args: n_head must be'),
    ('train-init-shapes', [*TRAIN, '--init_from={root}/shape.pt'], 'do not match its model_args'),
    ('train-init-other-vocab', [*TRAIN, '--init_from={root}/othervocab.pt'], 'different vocabularies'),
    ('train-init-layer_map-skips', [*TRAIN, '--init_from={root}/ckpt.pt', '--layer_map=[0,0]'], 'never runs block(s) [1]'),
    ('train-init-hf-config-list', [*TRAIN, '--init_from=hf:{root}/hf_list'], 'must hold a JSON object'),
    # train.py: data dirs
    ('train-meta-bad-json', [*TRAIN, '--data_dir={root}/d_badjson'], 'meta.json is not valid JSON'),
    ('train-meta-empty-object', [*TRAIN, '--data_dir={root}/d_obj'], 'meta.json: vocab_size must be'),
    ('train-meta-list', [*TRAIN, '--data_dir={root}/d_list'], 'must hold a JSON object'),
    ('train-meta-vocab-too-small', [*TRAIN, '--data_dir={root}/d_smallvocab'], 'outside the meta.json vocab_size of 5'),
    ('train-meta-dtype', [*TRAIN, '--data_dir={root}/d_dtype'], "dtype must be 'uint16' or 'uint32'"),
    ('train-train.bin-empty', [*TRAIN, '--data_dir={root}/d_emptytrain'], 'train.bin is empty'),
    ('train-train.bin-odd-size', [*TRAIN, '--data_dir={root}/d_odd'], 'not a whole number of uint16 tokens'),
    ('train-val.bin-short', [*TRAIN, '--data_dir={root}/d_short'], 'fewer than block_size+1'),
    ('train-no-meta-ids-too-large', [*TRAIN, '--data_dir={root}/d_nometa', '--vocab_size=3'], "outside the model's vocab_size"),
    # sample.py
    ('sample-top_k-0', [*SAMPLE, '--top_k=0'], 'top_k must be >= 1'),
    ('sample-temperature-neg', [*SAMPLE, '--temperature=-1'], 'temperature must be >= 0'),
    ('sample-max_new_tokens-neg', [*SAMPLE, '--max_new_tokens=-5'], 'max_new_tokens must be >= 1'),
    ('sample-prompt-file-missing', [*SAMPLE, '--start=FILE:{root}/nope.txt'], 'cannot read the prompt file'),
    ('sample-prompt-unknown-chars', [*SAMPLE, '--start=XYZ'], 'not in this dataset'),
    ('sample-payload', [*SAMPLE, '--init_from={root}/payload.pt'], 'refused for safety'),
    ('sample-no-tokenizer', [*SAMPLE, '--init_from={root}/notok.pt'], 'records no tokenizer'),
    ('sample-char-tokenizer-without-chars', [*SAMPLE, '--init_from={root}/badtok.pt'], "needs 'chars'"),
    ('sample-model_args-list', [*SAMPLE, '--init_from={root}/margs_list.pt'], "'model_args' must be a dict"),
    ('sample-hf-index-without-weight_map', [*SAMPLE, '--init_from=hf:{root}/hf_index'], 'not a shard index'),
    ('sample-llama2c-zero-layers', [*SAMPLE, '--init_from=llama2c:{root}/l2c_zero.bin'], 'not a llama2.c checkpoint'),
    # eval.py
    ('eval-tokens-neg', [*PPL, '{root}/ckpt.pt', '--tokens', '-5'], '--tokens must be >= 1'),
    ('eval-block_size-neg', [*PPL, '{root}/ckpt.pt', '--block_size', '-1'], '--block_size must be >= 0'),
    ('eval-batch_size-0', [*PPL, '{root}/ckpt.pt', '--batch_size', '0'], '--batch_size must be >= 1'),
    ('eval-split-unknown', [*PPL, '{root}/ckpt.pt', '--split', 'test'], 'test.bin'),
    ('eval-meta-bad-json', ['eval.py', 'ppl', '{root}/ckpt.pt', '--device', 'cpu', '--data', '{root}/d_badjson'], 'not valid JSON'),
    ('eval-other-vocab', [*PPL, '{root}/othervocab.pt'], 'tokenizer'),
    ('eval-payload', [*PPL, '{root}/payload.pt'], 'refused for safety'),
    ('eval-sweep-length-0', [*SWEEP, '--generate', 'methods', '--length', '0'], '--length must be >= 1'),
    ('eval-sweep-out-is-input', [*SWEEP, '--out', '{root}/ckpt.pt'], 'is also an input'),
    ('eval-sweep-out-is-maps-file', [*SWEEP, '--maps_file', '{root}/maps.txt', '--out', '{root}/maps.txt'], 'is also an input'),
    ('eval-sweep-out-is-dir', [*SWEEP, '--out', '{root}/data'], 'exists and is a directory'),
    ('eval-sweep-out-below-file', [*SWEEP, '--out', '{root}/ckpt.pt/sweep.csv'], 'which is a file'),
    ('eval-ppl-no-data', ['eval.py', 'ppl', '{root}/ckpt.pt', '--device', 'cpu'], 'ppl needs --data'),
    ('eval-sweep-no-checkpoint', ['eval.py', 'sweep', '--device', 'cpu', '--data', '{root}/data'], 'sweep needs a checkpoint'),
    ('eval-sweep-from-csv-not-sweep', ['eval.py', 'sweep', '--from_csv', '{root}/maps.txt'], 'not a sweep CSV'),
    ('eval-sweep-from-csv-and-checkpoint', [*SWEEP, '--from_csv', '{root}/maps.txt'], 'no checkpoint'),
    ('eval-mc-payload', ['eval.py', 'mc', '{root}/payload.pt', '--device', 'cpu', '--file', '{root}/mc.jsonl'], 'refused for safety'),
    # convert.py
    ('convert-hf-config-list', ['convert.py', 'import', 'hf:{root}/hf_list', '--out', '{root}/o.pt'], 'must hold a JSON object'),
    ('convert-hf-config-bad-json', ['convert.py', 'import', 'hf:{root}/hf_badjson', '--out', '{root}/o.pt'], 'unreadable config'),
    ('convert-hf-n_head-0', ['convert.py', 'import', 'hf:{root}/hf_nhead0', '--out', '{root}/o.pt'], 'n_head must be a positive integer'),
    ('convert-hf-index-without-weight_map', ['convert.py', 'import', 'hf:{root}/hf_index', '--out', '{root}/o.pt'], 'not a shard index'),
    ('convert-hf-bin-payload', ['convert.py', 'import', 'hf:{root}/hf_payload', '--out', '{root}/o.pt'], 'refused for safety'),
    ('convert-llama2c-zero-layers', ['convert.py', 'import', 'llama2c:{root}/l2c_zero.bin', '--out', '{root}/o.pt'], 'layers=0'),
    ('convert-import-out-is-input', ['convert.py', 'import', 'llama2c:{root}/tiny.bin', '--out', '{root}/tiny.bin'], 'is also an input'),
    ('convert-import-out-is-dir', ['convert.py', 'import', 'llama2c:{root}/tiny.bin', '--out', '{root}/data'], 'exists and is a directory'),
    ('convert-import-out-below-file', ['convert.py', 'import', 'llama2c:{root}/tiny.bin', '--out', '{root}/ckpt.pt/x.pt'], 'which is a file'),
    ('convert-export-payload', ['convert.py', 'export', '{root}/payload.pt', '--out', '{root}/hf_out'], 'refused for safety'),
    ('convert-export-into-file', ['convert.py', 'export', '{root}/ckpt.pt', '--out', '{root}/text.pt'], 'exists and is a file'),
    ('convert-export-model_args-n_head-0', ['convert.py', 'export', '{root}/margs_nhead0.pt', '--out', '{root}/hf_out'], 'n_head must be'),
    ('convert-missing-option', ['convert.py', 'import', 'llama2c:{root}/tiny.bin'], 'the following arguments are required: --out'),
    # grow.py: what checkpoint.py already guarantees it
    ('grow-payload', ['grow.py', '--method', 'stack', '{root}/payload.pt', '--out', '{root}/g.pt'], 'refused for safety'),
    ('grow-out-is-dir', ['grow.py', '--method', 'stack', '{root}/ckpt.pt', '--out', '{root}/data'], 'exists and is a directory'),
    ('grow-out-below-file', ['grow.py', '--method', 'stack', '{root}/ckpt.pt', '--out', '{root}/ckpt.pt/g.pt'], 'which is a file'),
]

# grow.py's own option validation
GROW_CASES = [
    ('grow-map-empty-range', ['grow.py', '--method', 'map', '--map', 'a:1-0', '{root}/ckpt.pt', '--out', '{root}/g.pt'], '1-0'),
    ('grow-lesa_batch-0', ['grow.py', '--method', 'lesa', '--lesa_batch', '0', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'lesa_batch'),
    ('grow-lesa_epochs-0', ['grow.py', '--method', 'lesa', '--lesa_epochs', '0', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'lesa_epochs'),
    ('grow-out-is-input', ['grow.py', '--method', 'stack', '{root}/ckpt.pt', '--out', '{root}/ckpt.pt'], 'is also an input'),
    ('grow-missing-option', ['grow.py', '{root}/ckpt.pt', '--out', '{root}/g.pt'], '--method'),
    ('grow-yaml-out-is-yaml', ['grow.py', '--method', 'map', '--yaml', '{root}/slices.yml', '--out', '{root}/slices.yml'], 'is also an input'),
    ('grow-yaml-missing', ['grow.py', '--method', 'map', '--yaml', '{root}/nope.yml', '--out', '{root}/g.pt'], 'cannot read {root}/nope.yml'),
    ('grow-map-nothing', ['grow.py', '--method', 'map', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'method map needs map or yaml'),
    ('grow-noise-nan', ['grow.py', '--method', 'stack', '--noise', 'nan', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'noise must be a finite number >= 0'),
    ('grow-noise-neg', ['grow.py', '--method', 'stack', '--noise', '-0.1', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'noise must be'),
    ('grow-width-noise-inf', ['grow.py', '--method', 'width', '--noise', 'inf', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'noise must be'),
    ('grow-ligo-no-shape', [*LIGO, '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'method ligo needs n_layer or n_embd or mlp_hidden'),
    ('grow-ligo-shrinks', [*LIGO, '--n_layer', '1', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'n_layer=1 would drop source layers'),
    ('grow-ligo-batch_size-0', [*LIGO, '--n_layer', '4', '--batch_size', '0', '{root}/ckpt.pt', '--out', '{root}/g.pt'], '--batch_size must be >= 1'),
    ('grow-ligo_lr-nan', [*LIGO, '--n_layer', '4', '--ligo_lr', 'nan', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'lr must be a finite number > 0'),
    ('grow-ligo_lr-0', [*LIGO, '--n_layer', '4', '--ligo_lr', '0', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'lr must be a finite number > 0'),
    ('grow-ligo_steps-neg', [*LIGO, '--n_layer', '4', '--ligo_steps', '-1', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'steps must be'),
    ('grow-ligo-other-tokenizer', [*LIGO, '--n_layer', '4', '{root}/othervocab.pt', '--out', '{root}/g.pt'], 'different vocabularies'),
    ('grow-ligo-data-missing', ['grow.py', '--method', 'ligo', '--n_layer', '4', '--data', '{root}/nope', '{root}/ckpt.pt', '--out', '{root}/g.pt'], 'nope'),
    ('grow-data-not-ligo', ['grow.py', '--method', 'stack', '--data', '{root}/data', '{root}/ckpt.pt', '--out', '{root}/g.pt'], '--data does not apply'),
]

# train.py options that growth and the schedule need, checked before any work
TRAIN_CASES = [
    ('train-ligo-no-shape', [*TRAIN, '--grow_method=ligo', '--grow_at_iter=1'], 'method ligo needs n_layer or n_embd or mlp_hidden'),
    ('train-grow_steps-ligo-no-shape', [*TRAIN, "--grow_steps=[{'iter': 1, 'method': 'ligo'}]"], 'method ligo needs'),
    ('train-grow-map-nothing', [*TRAIN, '--grow_method=map', '--grow_at_iter=1'], 'method map needs map or yaml'),
    ('train-min_lr-above-learning_rate', [*TRAIN, '--learning_rate=1e-3', '--min_lr=1e-2'], 'min_lr=0.01 exceeds learning_rate=0.001'),
]

# study.py, run in the fixture tree (study files and their base config there)
STUDY = ['study.py', '--dry_run']
STUDY_CASES = [
    ('study-arm-key-typo', [*STUDY, 'st_typo.py'], "unknown config key 'n_layr' in arm 'small' of st_typo.py (did you mean 'n_layer'"),
    ('study-arm-key-typo-run', ['study.py', 'st_typo.py'], "unknown config key 'n_layr'"),
    ('study-arm-model-key-typo', [*STUDY, 'st_typo_model.py'], "'lora_rnak'"),
    ('study-only-empty', [*STUDY, 'st_good.py', '--only', ''], "--only takes comma-separated arm names, got ''"),
    ('study-only-trailing-comma', [*STUDY, 'st_good.py', '--only', 'scratch,'], '--only takes comma-separated arm names'),
    ('study-only-unknown', [*STUDY, 'st_good.py', '--only', 'smal'], "--only: no arm 'smal'"),
    ('study-name-dotdot', [*STUDY, 'st_dotdot.py'], "'..' cannot name a directory"),
    ('study-name-dot', ['study.py', 'st_dot.py'], "'.' cannot name a directory"),
    ('study-arm-dotdot', [*STUDY, 'st_arm_dotdot.py'], "'..' cannot name a directory"),
    ('study-unknown-key', [*STUDY, 'st_unknown.py'], "unknown key 'arm'"),
    ('study-no-arms', [*STUDY, 'st_noarms.py'], 'arms is empty'),
    ('study-seeds-strings', [*STUDY, 'st_seeds.py'], 'seeds must be distinct ints'),
    ('study-no-scratch-arm', [*STUDY, 'st_noscratch.py'], "scratch='scratch' is not an arm"),
    ('study-arm-not-dict', [*STUDY, 'st_armlist.py'], "arm 'scratch' must be a dict"),
    ('study-arm-sets-out_dir', [*STUDY, 'st_outdir.py'], 'sets out_dir'),
    ('study-base-missing', [*STUDY, 'st_nobase.py'], 'base config nope.py not found'),
    ('study-after-cycle', [*STUDY, 'st_cycle.py'], 'cycle'),
    ('study-after-not-list', [*STUDY, 'st_after_str.py'], 'after must be a list'),
    ('study-losses-strings', [*STUDY, 'st_losses.py'], 'losses must be numbers'),
    ('study-file-syntax', [*STUDY, 'st_syntax.py'], 'st_syntax.py: SyntaxError'),
    ('study-file-missing', [*STUDY, 'nope.py'], 'no such study file'),
    ('study-jobs-0', ['study.py', 'st_good.py', '--jobs', '0'], '--jobs must be >= 1'),
    ('study-jobs-not-int', ['study.py', 'st_good.py', '--jobs', 'two'], "invalid int value: 'two'"),
    ('study-train-empty', ['study.py', 'st_good.py', '--train', ''], '--train is empty'),
    ('study-results-conflict-markers', [*STUDY, 'st_rec.py'], 'results/rec.runs.json: not a JSON file'),
    ('study-done-json-binary', [*STUDY, 'st_done.py'], 'runs/dj/scratch/s1/done.json: not a JSON file'),
]

# compare.py: its outputs, the CSVs it reads back, the logs
CMP = ['compare.py', '{root}/cmp']
COMPARE_CASES = [
    ('compare-out-is-log', [*CMP, '--out', '{root}/cmp/scratch/s1/log.jsonl'], 'is also an input'),
    ('compare-out-is-run-config', [*CMP, '--out', '{root}/cmp/fast/s1/config.json'], 'is also an input'),
    ('compare-out-is-dir', [*CMP, '--out', '{root}/cmp'], 'exists and is a directory'),
    ('compare-out-below-file', [*CMP, '--out', '{root}/sum.csv/plot.png'], 'which is a file'),
    ('compare-csv-is-log', [*CMP, '--csv', '{root}/cmp/fast/s1/log.jsonl'], 'is also an input'),
    ('compare-csv-is-dir', [*CMP, '--csv', '{root}/data'], 'exists and is a directory'),
    ('compare-csv-and-out-same', [*CMP, '--csv', '{root}/new.csv', '--out', '{root}/new.csv'], 'given as two outputs'),
    ('compare-from-csv-out-is-csv', ['compare.py', '--from_csv', '{root}/sum.csv', '--out', '{root}/sum.csv'], 'is also an input'),
    ('compare-from-csv-out-is-curves', ['compare.py', '--from_csv', '{root}/sum.csv', '--out', '{root}/sum.curves.csv'], 'is also an input'),
    ('compare-from-csv-out-is-dir', ['compare.py', '--from_csv', '{root}/sum.csv', '--out', '{root}/cmp'], 'exists and is a directory'),
    ('compare-from-csv-no-sp-columns', ['compare.py', '--from_csv', '{root}/sum_nosp.csv'], "sum_nosp.csv: not a compare summary CSV (no column 'loss@"),
    ('compare-from-csv-no-final-columns', ['compare.py', '--from_csv', '{root}/sum_nofinal.csv'], "no column 'flops@final'"),
    ('compare-from-csv-cut-last-row', ['compare.py', '--from_csv', '{root}/sum_cut.csv'], 'sum_cut.csv'),
    ('compare-from-csv-cut-row-short', ['compare.py', '--from_csv', '{root}/sum_cut_row.csv'], 'sum_cut_row.csv:3: not as many values'),
    ('compare-from-csv-extra-values', ['compare.py', '--from_csv', '{root}/sum_extra.csv'], 'sum_extra.csv:3: not as many values'),
    ('compare-from-csv-conflict-markers', ['compare.py', '--from_csv', '{root}/sum_conflict.csv'], 'sum_conflict.csv:2'),
    ('compare-from-csv-nul', ['compare.py', '--from_csv', '{root}/sum_nul.csv'], 'sum_nul.csv:2: bad value'),
    ('compare-from-csv-binary', ['compare.py', '--from_csv', '{root}/sum_binary.csv'], 'sum_binary.csv: not a compare summary CSV'),
    ('compare-from-csv-cut-curves', ['compare.py', '--from_csv', '{root}/cc.csv'], 'cc.curves.csv'),
    ('compare-from-csv-with-logs', ['compare.py', '--from_csv', '{root}/sum.csv', '{root}/cmp'], 'no logs'),
    ('compare-log-binary', ['compare.py', '{root}/log_binary'], 'log_binary/log.jsonl: not a log.jsonl'),
    ('compare-log-bad-record-mid-file', ['compare.py', '{root}/log_middle'], 'log_middle/log.jsonl:1: malformed log record'),
    ('compare-log-no-evals', ['compare.py', '{root}/log_noeval'], 'no eval records'),
    ('compare-run-config-conflict', ['compare.py', '{root}/log_conflict_cfg'], "log_conflict_cfg/config.json: not a run's config.json"),
    ('compare-losses-not-numbers', [*CMP, '--losses', 'low'], '--at and --losses take comma-separated numbers'),
    ('compare-unknown-option', [*CMP, '--outt', 'x.png'], 'unrecognized arguments: --outt'),
    ('compare-study-dir-empty', ['compare.py', '{root}/results'], 'no log.jsonl'),
]

MC = ['eval.py', 'mc', '{root}/ckpt.pt', '--device', 'cpu', '--file']
EVAL_CASES = [
    ('eval-sweep-maps_file-is-dir', [*SWEEP, '--maps_file', '{root}/data'], '--maps_file {root}/data: cannot read it'),
    ('eval-sweep-maps_file-binary', [*SWEEP, '--maps_file', '{root}/binary.txt'], '--maps_file {root}/binary.txt: cannot read it as text'),
    ('eval-mc-choices-numbers', [*MC, '{root}/mc_numbers.jsonl'], 'mc_numbers.jsonl:1: want'),
    ('eval-mc-choices-string', [*MC, '{root}/mc_string.jsonl'], 'mc_string.jsonl:1: want'),
    ('eval-mc-one-choice', [*MC, '{root}/mc_one.jsonl'], 'mc_one.jsonl:1: want'),
    ('eval-mc-label-out-of-range', [*MC, '{root}/mc_label.jsonl'], 'mc_label.jsonl:1: want'),
    ('eval-mc-no-context', [*MC, '{root}/mc_nocontext.jsonl'], 'mc_nocontext.jsonl:1: want'),
    ('eval-mc-binary', [*MC, '{root}/mc_binary.jsonl'], '--file {root}/mc_binary.jsonl: cannot read it as text'),
    ('eval-mc-file-missing', [*MC, '{root}/nope.jsonl'], 'no such file'),
    ('eval-compare-out-is-log', ['eval.py', 'compare', '{root}/cmp', '--out', '{root}/cmp/scratch/s1/log.jsonl'], 'is also an input'),
]

# the data prep scripts (no network: local inputs; the output dirs are below the fixture tree)
SC = ['data/shakespeare_char/prepare.py', '--out_dir', '{root}/prep']
TS = ['data/tinystories/prepare.py', '--out_dir', '{root}/prep', '--vocab_size', '300', '--num_proc', '1']
PREP_CASES = [
    ('prep-char-empty-input', [*SC, '--input', '{root}/empty.txt'], 'holds 0 characters'),
    ('prep-char-binary-input', [*SC, '--input', '{root}/binary.txt'], '--input {root}/binary.txt: cannot read it as UTF-8 text'),
    ('prep-char-too-many-chars', [*SC, '--input', '{root}/many_chars.txt'], 'the uint16 ids hold at most 65,536'),
    ('prep-char-out_dir-is-file', ['data/shakespeare_char/prepare.py', '--input', '{root}/stories.txt', '--out_dir', '{root}/ckpt.pt'], 'exists and is a file'),
    ('prep-char-out_dir-below-file', ['data/shakespeare_char/prepare.py', '--input', '{root}/stories.txt', '--out_dir', '{root}/ckpt.pt/d'], 'which is a file'),
    ('prep-char-out_dir-is-input', ['data/shakespeare_char/prepare.py', '--input', '{root}/stories.txt', '--out_dir', '{root}/stories.txt'], 'is also an input'),
    ('prep-char-input-missing', [*SC, '--input', '{root}/nope.txt'], 'file not found'),
    ('prep-char-halves-with-input', [*SC, '--input', '{root}/stories.txt', '--halves'], '--halves'),
    ('prep-char-unknown-option', [*SC, '--nope'], 'unrecognized arguments: --nope'),
    ('prep-tinystories-out_dir-is-file', ['data/tinystories/prepare.py', '--input', '{root}/stories.txt', '--vocab_size', '300', '--out_dir', '{root}/ckpt.pt'], 'exists and is a file'),
    ('prep-tinystories-vocab_size-4k', ['data/tinystories/prepare.py', '--input', '{root}/stories.txt', '--vocab_size', '4k'], "invalid int value: '4k'"),
    ('prep-tinystories-vocab_size-too-big', [*TS[:4], '70000', '--num_proc', '1', '--input', '{root}/stories.txt'], 'between 258'),
    ('prep-tinystories-binary-input', [*TS, '--input', '{root}/binary.txt'], 'cannot read --input {root}/binary.txt'),
    ('prep-tinystories-empty-input', [*TS, '--input', '{root}/empty.txt'], 'at least one train and one val story'),
    ('prep-tinystories-three-inputs', [*TS, '--input', '{root}/stories.txt', '{root}/stories.txt', '{root}/stories.txt'], 'one or two files'),
    ('prep-tinystories-format', [*TS, '--input', '{root}/ckpt.pt'], 'unsupported format'),
    ('prep-web-shard_tokens-0', ['data/web/prepare.py', '--input', '{root}/docs.jsonl', '--out_dir', '{root}/prep', '--shard_tokens', '0'], '--shard_tokens must be >= 1'),
    ('prep-web-no-source', ['data/web/prepare.py', '--out_dir', '{root}/prep'], 'one of the arguments --input --dataset is required'),
]

# data/web/prepare.py checks its state file after loading the GPT-2 BPE (../shared's tiktoken cache offline)
WEB = ['data/web/prepare.py', '--input', '{root}/docs.jsonl', '--num_proc', '1', '--out_dir']
WEB_CASES = [
    ('prep-web-state-corrupt', [*WEB, '{root}/web_corrupt'], 'web_corrupt/prepare_state.json is damaged'),
    ('prep-web-state-list', [*WEB, '{root}/web_list'], 'web_list/prepare_state.json is damaged'),
    ('prep-web-state-binary', [*WEB, '{root}/web_binary'], 'web_binary/prepare_state.json is damaged'),
    ('prep-web-out_dir-is-file', [*WEB, '{root}/ckpt.pt'], 'exists and is a file'),
]


def tree_hashes(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else 'dir'
            for p in sorted(root.rglob('*'))}


def run_script(tree, cmd, env=ENV):
    """A case's command, run in the fixture tree `tree` -> (the process, files that appeared, changed or went)."""
    before = tree_hashes(tree)
    script, *args = [a.replace('{root}', str(tree)) for a in cmd]
    p = subprocess.run([sys.executable, str(REPO / script), *args], cwd=tree, env=env, capture_output=True, text=True,
                       timeout=300)
    after = tree_hashes(tree)
    return p, sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def check_one_line_error(p, changed, msg):
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0, f"accepted (exit 0):\n{p.stderr[-2000:]}"
    assert 'Traceback' not in p.stderr + p.stdout, p.stderr[-3000:]
    assert lines and lines[-1].startswith('error:'), p.stderr[-2000:]
    assert sum(line.startswith('error:') for line in lines) == 1, p.stderr[-2000:]
    assert msg in lines[-1], lines[-1]
    assert not changed, f"files appeared or changed: {changed}"


TABLE = {case[0]: case[1:] for case in CASES + GROW_CASES + TRAIN_CASES + STUDY_CASES + COMPARE_CASES + EVAL_CASES + PREP_CASES}


@pytest.fixture(scope='module')
def outcomes(root, request, tmp_path_factory):
    """The selected table cases, two at a time (each is mostly an interpreter and torch starting up: one per core),
    each in its own copy of the fixture tree -> {case: (process, changed files, the copy's path)}."""
    wanted = [item.callspec.params['case'] for item in request.session.items  # this file's table (test_tokens.py has
              if getattr(item, 'module', None) is request.module  # a test of the same name)
              and item.originalname == 'test_bad_input_is_one_line_error']
    copies = tmp_path_factory.mktemp('cases')

    def run(case):
        tree = copies / case
        shutil.copytree(root, tree, symlinks=True)
        p, changed = run_script(tree, TABLE[case][0])
        shutil.rmtree(tree)
        return p, changed, tree

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(wanted, pool.map(run, wanted)))


@pytest.mark.parametrize('case', list(TABLE))
def test_bad_input_is_one_line_error(outcomes, case):
    p, changed, tree = outcomes[case]
    check_one_line_error(p, changed, TABLE[case][1].replace('{root}', str(tree)))


@pytest.mark.parametrize('cmd, msg', [c[1:] for c in WEB_CASES], ids=[c[0] for c in WEB_CASES])
def test_web_prep_bad_input_is_one_line_error(root, shared, cmd, msg):
    p, changed = run_script(root, cmd, env={**ENV, 'TIKTOKEN_CACHE_DIR': os.environ['TIKTOKEN_CACHE_DIR']})
    check_one_line_error(p, changed, msg.replace('{root}', str(root)))


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES + GROW_CASES + TRAIN_CASES + STUDY_CASES + COMPARE_CASES + EVAL_CASES + PREP_CASES + WEB_CASES]
    assert len(ids) == len(set(ids))

# -----------------------------------------------------------------------------
# a pickle payload through every loader entry point of the project


@pytest.fixture(params=['installed', 'pre-2.6'])
def torch_load_default(request, monkeypatch):
    """torch.load as installed, and as on torch 2.4/2.5 (which requirements.txt allows): weights_only=False unless
    the caller says otherwise. A loader that leaves weights_only to torch's default runs a payload there."""
    if request.param == 'pre-2.6':
        load = torch.load
        monkeypatch.setattr(torch, 'load', lambda *args, weights_only=False, **kw: load(*args, weights_only=weights_only, **kw))
    return request.param


def test_no_loader_runs_a_pickle_payload(tmp_path, torch_load_default):
    from convert import import_model
    marker = tmp_path / 'PWNED'
    torch.save({'model': Payload(marker), 'model_args': TINY}, tmp_path / 'p.pt')
    for d in ('run_last', 'run_best'):
        (tmp_path / d).mkdir()
        (tmp_path / d / ('last.pt' if d == 'run_last' else 'best.pt')).write_bytes((tmp_path / 'p.pt').read_bytes())
    for d, files in (('hf_bin', {'pytorch_model.bin': None}),
                     ('hf_shards', {'pytorch_model.bin.index.json': {'weight_map': {'transformer.wte.weight': 'a.bin'}}, 'a.bin': None})):
        (tmp_path / d).mkdir()
        (tmp_path / d / 'config.json').write_text(json.dumps(GPT2_CONFIG))
        for name, content in files.items():
            if content is None:
                torch.save({'transformer.wte.weight': Payload(marker)}, tmp_path / d / name)
            else:
                (tmp_path / d / name).write_text(json.dumps(content))
    loaders = [(load_checkpoint, tmp_path / 'p.pt'), (load_any, tmp_path / 'p.pt'), (load_any, tmp_path / 'run_last'),
               (load_any, tmp_path / 'run_best'), (run_checkpoint, tmp_path / 'run_last'),
               (import_model, f"hf:{tmp_path / 'hf_bin'}"), (import_model, f"hf:{tmp_path / 'hf_shards'}"),
               (load_any, f"hf:{tmp_path / 'hf_bin'}"), (load_any, tmp_path / 'hf_shards')]
    for loader, spec in loaders:
        with pytest.raises(ValueError, match='refused for safety') as e:
            loader(spec)
        assert not marker.exists(), f"{loader.__name__}({spec}) ran the payload"
        assert 'weights_only' not in str(e.value) and '\n' not in str(e.value)  # never torch's advice to load it anyway

# -----------------------------------------------------------------------------
# faults during a run


def train(root, out_dir, *args, check=True):
    cmd = [sys.executable, *[a.replace('{root}', str(root)) for a in TRAIN], f'--out_dir={out_dir}', *args]
    p = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def one_error_line(p):
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and 'Traceback' not in p.stderr, p.stderr[-3000:]
    assert lines[-1].startswith('error:') and sum(line.startswith('error:') for line in lines) == 1, p.stderr[-3000:]
    return lines[-1]


def test_kill9_during_saves_then_resume_cleans_up(root, tmp_path):
    """kill -9 while a run saves at every iteration: last.pt still loads; a resume finishes the run and removes
    the temp file of the killed process (planted if the kill missed the save), but not a live process's."""
    out = tmp_path / 'run'
    cmd = [sys.executable, *[a.replace('{root}', str(root)) for a in TRAIN], f'--out_dir={out}', '--max_iters=400',
           '--lr_decay_iters=400']
    p = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / 'last.pt').exists():
        assert p.poll() is None and time.time() < deadline, "the run never saved"
        time.sleep(0.01)
    deadline, caught = time.time() + 5, False  # then try to hit a save in progress
    while not caught and time.time() < deadline and p.poll() is None:
        caught = any(n.startswith('.last.pt.tmp') for n in os.listdir(out))
    p.send_signal(signal.SIGKILL)
    p.wait()
    dead_temp = out / f'.last.pt.tmp{p.pid}'
    if not caught or not dead_temp.exists():
        dead_temp.write_bytes((out / 'last.pt').read_bytes()[:1000])  # what a save cut off by kill -9 leaves
    live_temp = out / f'.best.pt.tmp{os.getpid()}'  # a save in progress in a live process must be left alone
    live_temp.write_bytes(b'in progress')
    stopped_at = load_checkpoint(out / 'last.pt')['iter_num']
    assert stopped_at >= 1
    train(root, out, '--init_from=resume', f'--max_iters={stopped_at + 2}')
    assert not dead_temp.exists() and live_temp.exists()
    assert load_checkpoint(out / 'last.pt')['iter_num'] == stopped_at + 2


def test_nan_stops_and_leaves_checkpoint_and_config_unchanged(root, tmp_path):
    out = tmp_path / 'run'
    train(root, out)
    before = {name: (out / name).read_bytes() for name in ('last.pt', 'config.json')}
    p = train(root, out, '--init_from=resume', '--max_iters=40', '--lr_decay_iters=40', '--learning_rate=1e9',
              '--grad_clip=0.0', '--decay_lr=False', check=False)
    assert 'non-finite' in one_error_line(p)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [n for n in os.listdir(out) if '.tmp' in n]


def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(root, tmp_path):
    """On a 2 MiB tmpfs a checkpoint of ~1.3 MB fits once, not twice: the second save fails."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / 'disk'
    disk.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        p = train(root, disk / 'run', '--n_embd=64', '--max_iters=3', '--lr_decay_iters=3', check=False)
        line = one_error_line(p)
        assert 'no space left' in line and str(disk / 'run') in line and 'MiB' in line, line
        assert load_checkpoint(disk / 'run' / 'last.pt')['iter_num'] == 1  # the first save, intact
        assert not [n for n in os.listdir(disk / 'run') if '.tmp' in n]
    finally:
        subprocess.run(['umount', str(disk)], check=True)
