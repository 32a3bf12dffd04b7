"""parallel.py on two CPU processes (gloo): FSDP2 training equals one process with the same global
batch (plain; tied blocks + LoRA + dropout + activation checkpointing; across a growth step), bf16 compute
reduces gradients in float32, each process holds about half the parameter and optimizer bytes, and a sharded
checkpoint resumes on 2 and on 1 process, and sample.py, eval.py and grow.py read it (and the .pt it consolidates into) alike.

The worker half of this file runs under torchrun; its rank 0 also runs the single-process reference,
so one launch (~10 s) covers every distributed case."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root, when torchrun runs this file
import parallel
from checkpoint import build_model, load_checkpoint
from model import GPT, GPTConfig

VOCAB = 64
TOKENIZER = {'tokenizer': 'char', 'vocab_size': VOCAB, 'chars': [chr(ord('0') + i) for i in range(VOCAB)]}
BASE = dict(block_size=16, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32)
CASES = {'plain': {}, 'tied_lora': dict(layer_map=[0, 1, 1, 0], lora_rank=2, dropout=0.1)}
MICRO = 4  # global micro-batches per step (2 per process on 2 processes), each of 2 sequences
STEPS = 3


def new_model(cfg, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**BASE, **cfg}))


def new_optimizer(model):
    return model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu')


def train(model, opt, steps, start=0, rank=0, world=1):
    """train.py's step: keyed micro-batches and dropout seeds (the same draws whatever the number of
    processes), gradient accumulation, clipping; the mean loss of each step."""
    local, losses = MICRO // world, []
    for it in range(start, start + steps):
        total = torch.zeros(())
        for k in range(local):
            slot = rank * local + k
            g = torch.Generator().manual_seed(1000 * it + slot)
            x = torch.randint(0, VOCAB, (2, BASE['block_size'] + 1), generator=g)
            torch.manual_seed(1000 * it + slot)
            _, loss = model(x[:, :-1].contiguous(), x[:, 1:].contiguous())
            (loss / local).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if world > 1:
            dist.all_reduce(total)
        losses.append(total.item() / MICRO)
    return losses


def grow_sharded(model, rank):
    """The growth recipe for a sharded run: rank 0 gathers the full model and grows it, every rank
    builds the grown architecture and shards it, rank 0's weights are broadcast into the shards."""
    from grow import grow
    full = parallel.full_state_dict(model)
    grown = grow([dict(model=full, model_args=model.config.to_dict())], 'stack') if rank == 0 else None
    box = [grown['model_args'] if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    new = parallel.shard(GPT(GPTConfig.from_dict(box[0])))
    parallel.load_full_state_dict(new, grown['model'] if rank == 0 else {})
    return new, new_optimizer(new)


def worker(out):
    dist.init_process_group('gloo')
    rank, world = dist.get_rank(), dist.get_world_size()
    res = {}
    for name, cfg in CASES.items():
        model = parallel.shard(new_model(cfg))
        model.set_activation_checkpointing(name == 'tied_lora')
        opt = new_optimizer(model)
        res[name] = dict(sharded=train(model, opt, STEPS, rank=rank, world=world), bytes=parallel.local_bytes(model, opt))
        if rank == 0:
            ref = new_model(cfg)
            ref_opt = new_optimizer(ref)
            res[name].update(single=train(ref, ref_opt, STEPS), single_bytes=parallel.local_bytes(ref, ref_opt))

    # checkpoint the tied+LoRA model; its next losses, and those of a fresh model loading the checkpoint
    extra = {'iter_num': STEPS, 'model_args': model.config.to_dict(), 'tokenizer': TOKENIZER}
    if rank == 0:
        (out / 'ckpt.7').mkdir()  # what a crash during an earlier save leaves
    parallel.save_sharded(out / 'ckpt', model, opt, extra)
    parallel.save_sharded(out / 'ckpt', model, opt, extra)  # replaces it
    full = parallel.full_state_dict(model)
    if rank == 0:
        torch.save(full, out / 'full.pt')
    res['next'] = train(model, opt, 2, start=STEPS, rank=rank, world=world)
    model = parallel.shard(new_model(CASES['tied_lora'], seed=1))
    opt = new_optimizer(model)
    extra = parallel.load_sharded(out / 'ckpt', model, opt)
    res['resumed'] = train(model, opt, 2, start=extra['iter_num'], rank=rank, world=world)

    # mixed precision (train.py's bf16 policy under FSDP): bf16 weights gathered for compute, each process's bf16
    # gradients reduced in float32 into float32 shards: their mean has more bits than bf16 holds
    model = parallel.shard(new_model({}), param_dtype=torch.bfloat16)
    x = torch.randint(0, VOCAB, (2, BASE['block_size'] + 1), generator=torch.Generator().manual_seed(rank))
    model(x[:, :-1].contiguous(), x[:, 1:].contiguous())[1].backward()
    grads = [p.grad.to_local() for p in model.parameters()]
    finer = sum(int((g != g.bfloat16().float()).sum()) for g in grads) / sum(g.numel() for g in grads)
    res['bf16'] = dict(dtypes=sorted({str(t.dtype) for t in [*model.parameters(), *grads]}), finer_than_bf16=finer)

    # growth inside a run: 2 steps, grow 2 -> 4 blocks (stack), 2 more steps with a fresh optimizer
    model = parallel.shard(new_model({}))
    opt = new_optimizer(model)
    losses = train(model, opt, 2, rank=rank, world=world)
    model, opt = grow_sharded(model, rank)
    res['growth'] = dict(sharded=losses + train(model, opt, 2, start=2, rank=rank, world=world), n_layer=model.config.n_layer)
    if rank == 0:
        from grow import grow
        ref = new_model({})
        ref_opt = new_optimizer(ref)
        losses = train(ref, ref_opt, 2)
        ref = build_model(grow([dict(model=ref.state_dict(), model_args=ref.config.to_dict())], 'stack'))
        res['growth']['single'] = losses + train(ref, new_optimizer(ref), 2, start=2)
        (out / 'results.json').write_text(json.dumps(res))
    dist.destroy_process_group()


@pytest.fixture(scope='module')
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp('fsdp')
    p = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', __file__, str(out)],
                       capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'}, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out, json.loads((out / 'results.json').read_text())


def test_two_processes_match_one(launched):
    _, res = launched
    for case in ('plain', 'tied_lora', 'growth'):
        np.testing.assert_allclose(res[case]['sharded'], res[case]['single'], rtol=1e-5, err_msg=case)
    assert res['growth']['n_layer'] == 4
    assert res['tied_lora']['sharded'][0] != res['plain']['sharded'][0]


def test_bf16_compute_reduces_gradients_in_float32(launched):
    """Summed in bf16, the reduced gradients would all be bf16 values; in float32 most are finer."""
    _, res = launched
    assert res['bf16']['dtypes'] == ['torch.float32']  # master weights and their gradients
    assert res['bf16']['finer_than_bf16'] > 0.25, res['bf16']


def test_each_process_holds_half_the_parameter_and_optimizer_bytes(launched):
    _, res = launched
    for case in ('plain', 'tied_lora'):
        ratio = res[case]['bytes'] / res[case]['single_bytes']
        assert 0.5 <= ratio < 0.52, (case, ratio)  # dim-0 shards: odd sizes round up on rank 0


def test_sharded_checkpoint_resumes_on_two_and_one_process(launched):
    out, res = launched
    np.testing.assert_allclose(res['resumed'], res['next'], rtol=1e-6)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith('ckpt')) == ['ckpt', 'ckpt.1']  # the replaced one and the crash's are gone
    model = new_model(CASES['tied_lora'], seed=1)
    opt = new_optimizer(model)
    extra = parallel.load_sharded(out / 'ckpt', model, opt)  # no process group: one process reads every shard
    model.set_activation_checkpointing(True)
    np.testing.assert_allclose(train(model, opt, 2, start=extra['iter_num']), res['next'], rtol=1e-5)


def test_consolidated_checkpoint_is_read_by_the_other_scripts(launched, repo, tmp_path):
    out, _ = launched
    ckpt = parallel.consolidate(out / 'ckpt')
    full = torch.load(out / 'full.pt', weights_only=True)
    assert ckpt['model'].keys() == full.keys() and all(torch.equal(ckpt['model'][k], full[k]) for k in full)
    assert ckpt['iter_num'] == STEPS and 'optimizer' not in ckpt  # the optimizer state stays in the directory
    (tmp_path / 'data').mkdir()
    (np.arange(200) % VOCAB).astype(np.uint16).tofile(tmp_path / 'data' / 'val.bin')
    (tmp_path / 'data' / 'meta.json').write_text(json.dumps({**TOKENIZER, 'dtype': 'uint16'}))
    run = lambda *cmd: subprocess.run([sys.executable, *map(str, cmd)], cwd=repo, capture_output=True, text=True,
                                      env={**os.environ, 'OMP_NUM_THREADS': '1'})
    p = run('parallel.py', out / 'ckpt', tmp_path / 'c.pt')
    assert p.returncode == 0, p.stderr[-2000:]
    assert build_model(load_checkpoint(tmp_path / 'c.pt')).config.layer_map == [0, 1, 1, 0]
    outputs = {}
    for model in (tmp_path / 'c.pt', out / 'ckpt'):  # the consolidated file, and the sharded directory itself
        for cmd in (['sample.py', f'--init_from={model}', '--num_samples=1', '--max_new_tokens=5', '--start=0', '--device=cpu'],
                    ['eval.py', 'ppl', model, '--data', tmp_path / 'data', '--tokens', '64', '--device', 'cpu'],
                    ['grow.py', model, '--method', 'stack', '--out', tmp_path / f'g_{model.name}.pt']):
            p = run(*cmd)
            assert p.returncode == 0, (cmd[0], p.stderr[-2000:])
            outputs.setdefault(cmd[0], []).append(p.stdout.replace(str(model), 'MODEL'))
        grown = load_checkpoint(tmp_path / f'g_{model.name}.pt')
        assert grown['model_args']['n_layer'] == 8  # 4 logical layers, stacked twice
    assert all(a == b for a, b in outputs.values()), outputs  # the same text, the same loss


def test_bad_sharded_checkpoint_paths_are_clear_errors(repo, tmp_path):
    with pytest.raises(FileNotFoundError, match='no sharded checkpoint'):
        parallel.consolidate(tmp_path)
    p = subprocess.run([sys.executable, 'parallel.py', str(tmp_path), str(tmp_path / 'c.pt')], cwd=repo, capture_output=True, text=True)
    assert p.returncode == 1 and p.stderr.startswith('error: no sharded checkpoint') and len(p.stderr.splitlines()) == 1
    assert not (tmp_path / 'c.pt').exists()
    model = new_model({})
    with pytest.raises(ValueError, match='not a sharded checkpoint link'):  # a real directory is never replaced
        parallel.save_sharded(tmp_path, model, new_optimizer(model), {})


if __name__ == '__main__':
    worker(Path(sys.argv[1]))
