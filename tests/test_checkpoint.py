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
