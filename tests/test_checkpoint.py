"""checkpoint.py: the one constructor, atomic weights_only files, every model spec, meta-device builds,
and checkpoints written before the contract changed."""
import os

import pytest
import torch

from checkpoint import build_model, load_any, load_checkpoint, make_checkpoint, run_checkpoint, save_checkpoint
from model import GPT, GPTConfig

def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, layer_map=[0, 1, 1], lora_rank=2))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    x = torch.randint(50, (2, 16))
    model(x, x)[1].backward()
    opt.step()
    ckpt = dict(model={f'_orig_mod.{k}': v for k, v in model.state_dict().items()}, model_args=model.config.to_dict(),
                optimizer=opt.state_dict(), iter_num=3, best_val_loss=float('inf'), config={'grow_options': {}},
                rng={'torch': torch.get_rng_state()}, param_counts=model.param_counts(), tokenizer=None)
    path = tmp_path / 'sub' / 'c.pt'
    save_checkpoint(ckpt, path)
    assert os.listdir(path.parent) == ['c.pt']  # no temp file left behind
    torch.load(path, weights_only=True)  # loads without executing code
    loaded = load_checkpoint(path)
    model2 = build_model(loaded)  # strips the torch.compile prefix
    model.eval(), model2.eval()
    assert torch.equal(model(x)[0], model2(x)[0])
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        load_checkpoint(tmp_path / 'missing.pt')
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='cannot read checkpoint'):
        load_checkpoint(tmp_path / 'junk.pt')
    torch.save({'weights': 1}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match='not a nanogrow checkpoint'):
        load_checkpoint(tmp_path / 'other.pt')


def tiny(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50, **kw))


def test_make_checkpoint_counts_and_defaults():
    model = tiny(layer_map=[0, 1, 1])
    ck = make_checkpoint({f'_orig_mod.{k}': v for k, v in model.state_dict().items()}, model.config.to_dict(), tokens_seen=7)
    assert ck['param_counts'] == model.param_counts() and ck['tokens_seen'] == 7 and ck['provenance'] is None
    assert all(not k.startswith('_orig_mod.') for k in ck['model'])
    with pytest.raises(TypeError, match='not checkpoint fields'):
        make_checkpoint(model.state_dict(), model.config.to_dict(), data_state={})


def test_meta_build_shares_tensors_ties_the_head_and_inits_added_adapters():
    model = tiny(pos='rope', norm='rmsnorm', bias=False)
    ck = make_checkpoint(model.state_dict(), model.config.to_dict())
    built = build_model(ck)
    assert built.transformer.wte.weight is built.lm_head.weight  # still tied after assign
    assert built.lm_head.weight.data_ptr() == ck['model']['lm_head.weight'].data_ptr()  # no second copy
    assert torch.equal(built.rope_cos, model.rope_cos) and not built.rope_cos.is_meta
    x = torch.randint(50, (2, 16))
    model.eval(), built.eval()
    assert torch.equal(model(x)[0], built(x)[0])
    adapted = build_model(ck, layer_map=[0, 1, 1, 1], lora_rank=4, ia3=True).eval()
    assert not any(p.is_meta for p in adapted.parameters())
    virtual = GPT(GPTConfig(**{**model.config.to_dict(), 'layer_map': [0, 1, 1, 1]})).eval()
    virtual.load_state_dict(model.state_dict())
    assert torch.allclose(adapted(x)[0], virtual(x)[0], atol=1e-6)  # added adapters start as the identity
    with pytest.raises(ValueError, match="cannot change"):
        build_model(ck, n_embd=64)


def test_load_any_specs(tmp_path):
    model = tiny()
    ck = make_checkpoint(model.state_dict(), model.config.to_dict(), iter_num=5)
    run = tmp_path / 'run'
    save_checkpoint(ck, run / 'last.pt')
    assert load_any(run)['iter_num'] == 5  # an out_dir without best.pt: its last.pt
    save_checkpoint(dict(ck, iter_num=4), run / 'best.pt')
    assert load_any(run)['iter_num'] == 4 and load_any(run / 'last.pt')['iter_num'] == 5
    with pytest.raises(FileNotFoundError, match='neither a run directory'):
        load_any(tmp_path)
    with pytest.raises(ValueError, match='no training state to resume'):
        run_checkpoint(run)  # written by make_checkpoint alone, as grow.py does


def test_checkpoints_written_before_the_contract_change_still_load(tmp_path):
    """The old train.py wrote grown_at, data_state and rng['seed'] and param_counts by hand."""
    model = tiny()
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    old = dict(model=model.state_dict(), model_args=model.config.to_dict(), optimizer=opt.state_dict(),
               scaler=torch.amp.GradScaler('cpu', enabled=False).state_dict(), iter_num=6, best_val_loss=2.5,
               config={'out_dir': 'x'}, rng={'torch': torch.get_rng_state(), 'seed': 1},
               data_state={'sampler': 'keyed', 'seed': 1, 'iter': 6}, param_counts=model.param_counts(), tokenizer=None,
               tokens_seen=10, flops_spent=1.0, elapsed=2.0, provenance=None, grown_at=4)
    save_checkpoint(old, tmp_path / 'last.pt')
    ck = run_checkpoint(tmp_path)
    assert ck['growths'] == [4] and 'grown_at' not in ck
    x = torch.randint(50, (1, 16))
    assert torch.equal(build_model(ck).eval()(x)[0], model.eval()(x)[0])


@pytest.mark.parametrize('failure', [OSError(28, 'No space left on device'),
                                     RuntimeError('[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0')])
def test_a_save_that_fails_part_way_keeps_the_previous_file(tmp_path, monkeypatch, failure):
    """Atomicity, tested: the new checkpoint is half written when the write fails (a full disk, torch's writer)."""
    path = tmp_path / 'last.pt'
    save_checkpoint(make_checkpoint(tiny().state_dict(), tiny().config.to_dict(), iter_num=1), path)
    before = path.read_bytes()
    real_save = torch.save

    def half_save(obj, f):
        real_save(obj, f)
        f.seek(len(before) // 2)
        f.truncate()
        raise failure
    monkeypatch.setattr(torch, 'save', half_save)
    with pytest.raises(ValueError, match=f"cannot write {path}") as e:
        save_checkpoint(make_checkpoint(tiny().state_dict(), tiny().config.to_dict(), iter_num=2), path)
    assert '\n' not in str(e.value) and ('no space left' in str(e.value)) == isinstance(failure, OSError)
    assert path.read_bytes() == before and load_checkpoint(path)['iter_num'] == 1
    assert os.listdir(tmp_path) == ['last.pt']


def test_save_removes_temp_files_of_dead_processes_only(tmp_path):
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    stale, live = tmp_path / f'.last.pt.tmp{dead.pid}', tmp_path / f'.best.pt.tmp{os.getppid()}'
    stale.write_bytes(b'x' * 1000)
    live.write_bytes(b'in progress')
    (tmp_path / 'notes.tmp1').write_text('not ours')
    save_checkpoint(make_checkpoint(tiny().state_dict(), tiny().config.to_dict()), tmp_path / 'last.pt')
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, 'last.pt', 'notes.tmp1'])


def test_not_a_checkpoint_is_named_as_such(tmp_path):
    for name, content in (('empty.pt', b''), ('text.pt', b'{"a": 1}')):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match='not a nanogrow checkpoint') as e:
            load_checkpoint(tmp_path / name)
        assert 'weights_only' not in str(e.value)
    model = tiny()
    for bad, msg in ((dict(model_args=[1, 2]), "'model_args' must be a dict"),
                     (dict(model_args={**model.config.to_dict(), 'n_head': 0}), 'model_args: n_head must be'),
                     (dict(model={'w': 1}), "'model' must be a state_dict"),
                     (dict(tokenizer=['char']), "'tokenizer' must be a dict or None")):
        torch.save({**make_checkpoint(model.state_dict(), model.config.to_dict()), **bad}, tmp_path / 'bad.pt')
        with pytest.raises(ValueError, match=msg):
            load_checkpoint(tmp_path / 'bad.pt')
