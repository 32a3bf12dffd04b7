"""grow.py: layer orders and provenance of every method, the exactness claims (llama_pro, width, tie at
full rank), weight-tied virtual layers, LESA's SVD bookkeeping and its loss on a trained model, the
CLI's outputs and one-line errors, and growth inside train.py (with resume across the growth step)."""
import hashlib
import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import grow as G
import lesa
from checkpoint import build_model, load_any, load_checkpoint, save_checkpoint
from grow import grow
from model import GPT, GPTConfig

GPT2ISH = dict(n_layer=4, n_head=4, n_embd=32, block_size=16, vocab_size=64)  # layernorm, biases, learned pos, tied
LLAMAISH = dict(GPT2ISH, norm='rmsnorm', bias=False, pos='rope', mlp='swiglu', n_kv_head=2, tie_embeddings=False)
IDX = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))


def make(seed=0, **kw):
    """A random checkpoint whose norm gains and biases are not ones/zeros (those would hide bugs)."""
    torch.manual_seed(seed)
    cfg = GPTConfig(**{**GPT2ISH, **kw})
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.2 * torch.randn_like(p))
    return dict(model=model.state_dict(), model_args=cfg.to_dict(), tokenizer={'tokenizer': 'char', 'vocab_size': 64},
                tokens_seen=1000, flops_spent=1e9, iter_num=7)


def tagged(ck, s):
    """Every tensor of layer i of source s filled with 100*s + i, so a grown model's layer order can be read off."""
    sd = dict(ck['model'])
    for k, v in sd.items():
        if k.startswith('transformer.h.'):
            sd[k] = torch.full_like(v, 100 * s + int(k.split('.')[2]))
    return dict(ck, model=sd)


def order(ck):
    sd, cfg = ck['model'], GPTConfig.from_dict(ck['model_args'])
    return [int(sd[f'transformer.h.{p}.ln_1.weight'][0]) for p in cfg.physical_map()]


@torch.no_grad()
def logits(ck):
    return build_model(ck).eval()(IDX)[0]


def origins(ck):
    return [l['origin'] for l in ck['provenance']['layers']]


def test_stack_orders_and_provenance():
    a, b = tagged(make(0), 0), tagged(make(1), 1)
    g = grow([a], 'stack')
    assert order(g) == [0, 1, 2, 3, 0, 1, 2, 3] and origins(g) == ['a:0', 'a:1', 'a:2', 'a:3'] * 2
    assert g['provenance']['new_blocks'] == [4, 5, 6, 7] and g['model_args']['n_layer'] == 8
    assert [l['new'] for l in g['provenance']['layers']] == [False] * 4 + [True] * 4
    assert g['tokens_seen'] == 1000 and g['flops_spent'] == 1e9 and g['tokenizer'] == a['tokenizer']
    assert g['param_counts'] == build_model(g).param_counts()
    assert order(grow([a], 'stack', n_layer=6)) == [0, 1, 2, 3, 0, 1]   # last repeat truncated
    assert order(grow([a], 'stack', factor=3)) == [0, 1, 2, 3] * 3
    g = grow([a, b], 'stack')  # several sources: a's layers then b's
    assert order(g) == [0, 1, 2, 3, 100, 101, 102, 103] and g['tokens_seen'] == 2000 and g['provenance']['new_blocks'] == []


def test_interleave_dus_orders():
    a = tagged(make(0), 0)
    assert order(grow([a], 'interleave')) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert order(grow([a], 'interleave', every=2)) == [0, 1, 1, 2, 3, 3]
    assert order(grow([a], 'interleave', factor=3, every=4)) == [0, 1, 2, 3, 3, 3]
    assert order(grow([a], 'interleave', n_layer=6)) == [0, 0, 1, 2, 2, 3]  # any depth: repeats spread evenly
    assert G.stack_order([2, 3], n_layer=6) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (0, 0)]  # pure: depths in
    a8, b8 = tagged(make(0, n_layer=8), 0), tagged(make(1, n_layer=8), 1)
    g = grow([a8], 'dus')  # SOLAR: m = n/4 = 2 -> [0..5] + [2..7]
    assert order(g) == [0, 1, 2, 3, 4, 5, 2, 3, 4, 5, 6, 7] and g['provenance']['new_blocks'] == [6, 7, 8, 9]
    assert order(grow([a8], 'dus', m=2, n_layer=10)) == [0, 1, 2, 3, 4, 5, 2, 3, 6, 7]  # prts generalisation
    assert order(grow([a8, b8], 'dus', m=3)) == [0, 1, 2, 3, 4, 103, 104, 105, 106, 107]


def test_midas_duplicates_the_middle_block_stage_by_stage():
    a3, a4 = tagged(make(0, n_layer=3), 0), tagged(make(0), 0)
    g = grow([a3], 'midas')
    assert order(g) == [0, 1, 1, 2] and g['model_args']['n_layer'] == 4 and len(g['provenance']['new_blocks']) == 1
    assert order(grow([a4], 'midas')) == [0, 1, 2, 2, 3]  # of two equally central layers, the later
    assert order(grow([a4], 'midas', block=2)) == [0, 1, 2, 1, 2, 3]
    assert order(grow([g], 'midas', block=2)) == [0, 1, 1, 1, 1, 2]  # a second stage grows the grown model
    assert order(grow([tagged(make(0, n_layer=1), 0)], 'midas')) == [0, 0]
    for bad in (0, 5):
        with pytest.raises(ValueError, match='block must be an integer in 1..4'):
            grow([a4], 'midas', block=bad)
    with pytest.raises(ValueError, match='one source'):
        grow([a4, a4], 'midas')


def test_multisource_interleave_pulls_each_sources_tensors():
    a, b = make(0), make(1)
    g = grow([a, b], 'interleave')
    assert origins(g) == ['a:0', 'b:0', 'a:1', 'b:1', 'a:2', 'b:2', 'a:3', 'b:3']
    for p in range(8):
        src = (a, b)[p % 2]['model']
        for k, v in g['model'].items():
            if k.startswith(f'transformer.h.{p}.'):
                assert torch.equal(v, src[k.replace(f'.h.{p}.', f'.h.{p // 2}.')]), k
    for k in ('transformer.wte.weight', 'transformer.wpe.weight', 'transformer.ln_f.weight'):
        assert torch.equal(g['model'][k], a['model'][k])
        assert torch.equal(grow([a, b], 'interleave', head_from='b')['model'][k], b['model'][k])
    assert logits(g).shape == (2, 16, 64) and g['provenance']['new_blocks'] == []


def test_map_and_mergekit_yaml():
    a, b = tagged(make(0), 0), tagged(make(1), 1)
    g = grow([a, b], 'map', map='a:0, b:0, a:1-2, 3')  # a bare index is the first source
    assert order(g) == [0, 100, 1, 2, 3]
    # Goliath-style alternating windows; layer_range is half-open, models by letter or by given name
    yml = """
merge_method: passthrough
dtype: float32
slices:
  - sources: [{model: xwin, layer_range: [0, 2]}]
  - sources: [{model: b, layer_range: [1, 3]}]
  - sources:
      - model: xwin
        layer_range: [2, 4]
"""
    gy = grow([a, b], 'map', yaml=yml, names=['xwin', 'euryale'])
    gm = grow([a, b], 'map', map='a:0-1,b:1-2,a:2-3')
    assert order(gy) == [0, 1, 101, 102, 2, 3] and gy['provenance']['layers'] == gm['provenance']['layers']
    assert gy['model'].keys() == gm['model'].keys() and all(torch.equal(gy['model'][k], gm['model'][k]) for k in gm['model'])
    # `scale` multiplies every tensor of its slice (mergekit): 0 on a middle slice inserts an exact identity
    # block; 0 on o_proj/down_proj only does too, here on the last slice, whose final norm and head {value: 1} keeps
    c = make(2, **LLAMAISH)
    for yml in ("slices:\n  - sources: [{model: a, layer_range: [0, 2]}]\n"
                "  - sources: [{model: a, layer_range: [1, 2], parameters: {scale: 0}}]\n"
                "  - sources: [{model: a, layer_range: [2, 4]}]\n",
                "slices:\n  - sources: [{model: a, layer_range: [0, 4]}]\n  - sources: [{model: a, layer_range: [3, 4], "
                "parameters: {scale: [{filter: o_proj, value: 0}, {filter: down_proj, value: 0}, {value: 1}]}}]\n"):
        gs = grow([c], 'map', yaml=yml)
        assert (logits(gs) - logits(c)).abs().max() <= 1e-6 and gs['model_args']['n_layer'] == 5
    assert not gs['model']['transformer.h.4.attn.c_proj.weight'].any()
    assert torch.equal(gs['model']['transformer.h.4.ln_1.weight'], c['model']['transformer.h.3.ln_1.weight'])


def test_yaml_scale_and_head_follow_mergekit():
    a, b = make(0, **LLAMAISH), make(1, **LLAMAISH)
    yml = """
slices:
  - sources: [{model: a, layer_range: [0, 2]}]
    parameters: {scale: 2}
  - sources: [{model: b, layer_range: [1, 4], parameters: {scale: [{filter: q_proj, value: [0, 1]}]}}]
"""
    g = grow([a, b], 'map', yaml=yml)
    sd, sa, sb = g['model'], a['model'], b['model']
    for k in [k for k in sa if k.startswith('transformer.h.0.')] + ['transformer.wte.weight']:
        assert torch.equal(sd[k], 2 * sa[k]), k  # every tensor of the first slice, and its embeddings
    for k in ('transformer.ln_f.weight', 'lm_head.weight'):
        assert torch.equal(sd[k], sb[k]), k  # the last slice's model, unscaled (q_proj matches neither)
    for p, (i, x) in enumerate([(1, 0.0), (2, 0.5), (3, 1.0)], start=2):  # a gradient over the slice
        W, W0 = sd[f'transformer.h.{p}.attn.c_attn.weight'], sb[f'transformer.h.{i}.attn.c_attn.weight']
        assert torch.equal(W[:32], x * W0[:32]) and torch.equal(W[32:], W0[32:])  # q rows only: k, v untouched
    assert torch.equal(grow([a, b], 'map', yaml=yml, head_from='a')['model']['lm_head.weight'], sa['lm_head.weight'])
    with pytest.raises(ValueError, match='bad YAML: scale'):
        grow([a], 'map', yaml="slices:\n  - sources: [{model: a, layer_range: [0, 2], parameters: {scale: [x]}}]\n")


def test_yaml_matches_mergekit_tensor_by_tensor(tmp_path, repo):
    """mergekit itself on tiny random Hugging Face Llama models, named by directory in the YAML as
    mergekit configs name them: grow.py's model equals mergekit's in every tensor, with an untied and a
    tied head, filters, a gradient, source/slice/top-level parameters and two models."""
    tf = pytest.importorskip('transformers')
    try:
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions, run_merge
    except ImportError as e:  # CI installs it without its CUDA-pulling dependencies (.ci/run)
        if os.environ.get('CI') == 'true':
            pytest.fail(f"CI=true but mergekit cannot be imported ({e})")
        pytest.skip(f"needs mergekit ({e}): pip install --no-deps mergekit==0.1.5 immutables peft accelerate")
    import yaml
    for tie in (False, True):
        a, b = tmp_path / f'a{tie}', tmp_path / f'b{tie}'
        for seed, d in enumerate((a, b)):
            torch.manual_seed(seed)
            m = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                                   tie_word_embeddings=tie))
            with torch.no_grad():  # away from the init's ones, which would hide a scale applied to a norm or not
                for p in m.parameters():
                    p.normal_(1.0 if p.dim() == 1 else 0.0, 0.3)
            m.save_pretrained(d)
        config = {'merge_method': 'passthrough', 'dtype': 'float32', 'parameters': {'scale': [{'filter': 'o_proj', 'value': 0.5}]},
                  'slices': [{'sources': [{'model': str(a), 'layer_range': [0, 2]}], 'parameters': {'scale': 2.0}},
                             {'sources': [{'model': str(b), 'layer_range': [1, 4], 'parameters': {
                                 'scale': [{'filter': 'self_attn', 'value': [0.0, 1.0]}, {'filter': 'mlp.up', 'value': 3}]}}]},
                             {'sources': [{'model': str(a), 'layer_range': [3, 4]}],
                              'parameters': {'scale': [{'filter': 'norm', 'value': 0.25}, {'filter': 'q_proj', 'value': 4}]}}]}
        (tmp_path / 'fm.yml').write_text(yaml.safe_dump(config))
        run_merge(MergeConfiguration.model_validate(config), str(tmp_path / f'mk{tie}'),
                  MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
        theirs = load_any(tmp_path / f'mk{tie}')
        if tie:  # in process; the command line (models loaded from the directories the YAML names) once
            ours = grow([load_any(a), load_any(b)], 'map', yaml=yaml.safe_dump(config), names=[str(a), str(b)])
        else:
            r = run(repo, '--method', 'map', '--yaml', tmp_path / 'fm.yml', '--out', tmp_path / 'g.pt')
            assert r.returncode == 0, r.stderr
            ours = load_checkpoint(tmp_path / 'g.pt')
        assert ours['model_args'] == theirs['model_args'] and ours['model'].keys() == theirs['model'].keys()
        for k, v in theirs['model'].items():
            assert torch.allclose(ours['model'][k], v, rtol=0, atol=1e-6), (tie, k)
        assert not torch.equal(ours['model']['transformer.h.0.ln_1.weight'], load_any(a)['model']['transformer.h.0.ln_1.weight'])


@pytest.mark.parametrize('arch', [GPT2ISH, LLAMAISH], ids=['gpt2', 'llama'])
def test_llama_pro_is_exact_and_trains_new_blocks_only(arch):
    c = make(0, **arch)
    g = grow([c], 'llama_pro', every=2)
    assert origins(g) == ['a:0', 'a:1', 'zero(a:1)', 'a:2', 'a:3', 'zero(a:3)'] and g['provenance']['new_blocks'] == [2, 5]
    assert (logits(g) - logits(c)).abs().max() <= 1e-6
    assert grow([c], 'llama_pro', n_layer=6)['provenance']['layers'] == g['provenance']['layers']
    for k, v in g['model'].items():
        if k.startswith(('transformer.h.2.attn.c_proj', 'transformer.h.2.mlp.c_proj')):
            assert not v.any(), k
    model = build_model(g)
    model.set_trainable('new', g['provenance']['new_blocks'])
    assert all(p.requires_grad == n.startswith(('transformer.h.2.', 'transformer.h.5.')) for n, p in model.named_parameters())
    model(IDX, IDX)[1].backward()  # step 0: only the zeroed output projections get gradient
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert not grads['transformer.h.2.attn.c_attn.weight'].any() and not grads['transformer.h.2.mlp.c_fc.weight'].any()
    assert grads['transformer.h.2.attn.c_proj.weight'].any() and grads['transformer.h.2.mlp.c_proj.weight'].any()


def test_random_insertion():
    c = make(0)
    g = grow([c], 'random', every=2, seed=1)
    assert origins(g) == ['a:0', 'a:1', 'new', 'a:2', 'a:3', 'new'] and g['provenance']['new_blocks'] == [2, 5]
    new = g['model']['transformer.h.2.mlp.c_proj.weight']
    assert not any(torch.equal(new, v) for v in c['model'].values())
    assert abs(new.std().item() - 0.02 / (2 * 6) ** 0.5) < 0.002  # GPT-2's init, depth-scaled for 6 layers
    assert torch.equal(grow([c], 'random', every=2, seed=1)['model']['transformer.h.5.attn.c_attn.weight'],
                       g['model']['transformer.h.5.attn.c_attn.weight'])
    assert not torch.equal(grow([c], 'random', every=2, seed=2)['model']['transformer.h.5.attn.c_attn.weight'],
                           g['model']['transformer.h.5.attn.c_attn.weight'])


@pytest.mark.parametrize('arch', [GPT2ISH, LLAMAISH], ids=['gpt2', 'llama'])
def test_width_is_function_preserving(arch):
    c = make(0, **arch)
    ref = logits(c)
    g = grow([c], 'width')  # x2: residual, heads (and kv heads), MLP
    a = g['model_args']
    assert (a['n_embd'], a['n_head'], a['n_kv_head']) == (64, 8, 4 if arch is LLAMAISH else None)
    assert not a['tie_embeddings'] and (logits(g) - ref).abs().max() <= 1e-5
    assert (logits(grow([c], 'width', factor=3)) - ref).abs().max() <= 1e-5
    gm = grow([c], 'width', mlp_hidden=200)  # any MLP size (here 1.56x), residual untouched
    assert gm['model_args']['tie_embeddings'] == c['model_args']['tie_embeddings'] and (logits(gm) - ref).abs().max() <= 1e-5
    noisy = (logits(grow([c], 'width', noise=0.1)) - ref).abs().max()
    assert 1e-4 < noisy < ref.abs().max()
    if arch is GPT2ISH:  # the tying pitfall: wte' = [E, E] used as the head too doubles every logit
        sd = dict(g['model'], **{'lm_head.weight': g['model']['transformer.wte.weight']})
        naive = build_model(dict(model=sd, model_args=dict(a, tie_embeddings=True)))
        assert torch.allclose(naive(IDX)[0], 2 * ref, atol=1e-4)


@pytest.mark.parametrize('arch', [GPT2ISH, LLAMAISH], ids=['gpt2', 'llama'])
def test_width_zero_is_exact_random_is_not_and_both_train(arch):
    c = make(0, **arch)  # layernorm + biases + tied head, or rmsnorm + GQA + SwiGLU
    ref = logits(c)
    for opts in (dict(n_embd=48), dict(mlp_hidden=200)):  # residual + heads only (6 heads of 8 / 16); MLP only
        zero, rand = (grow([c], 'width', init=init, **opts) for init in ('zero', 'random'))
        assert (logits(zero) - ref).abs().max() <= 1e-5, opts
        assert (logits(rand) - ref).abs().max() > 1e-3, opts
    with pytest.raises(ValueError, match='multiple of'):
        grow([c], 'width', init='zero', n_embd=44)  # not whole heads (of whole kv groups)
    with pytest.raises(ValueError, match='noise'):
        grow([c], 'width', init='random', noise=0.1)
    d, H = 32, 128
    for init in ('zero', 'random'):  # x2 everywhere: 8 heads (GQA: 4 kv heads), tied head stays tied
        g = grow([c], 'width', init=init)
        a = g['model_args']
        assert (a['n_embd'], a['n_head'], a['n_kv_head'], a['tie_embeddings']) == (64, 8, c['model_args']['n_kv_head'] and 4, c['model_args']['tie_embeddings'])
        assert init == 'random' or (logits(g) - ref).abs().max() <= 1e-5
        model = build_model(g)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(8):
            loss = model(IDX, IDX)[1]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0] - 0.2, (init, losses)
        mlp_out, attn_out = model.transformer.h[0].mlp.c_proj.weight, model.transformer.h[0].attn.c_proj.weight
        assert mlp_out[:, H:].abs().min() > 0 and attn_out[:, d:].abs().min() > 0  # new units' fan-out (zero at first) learned
        assert attn_out[d:].abs().min() > 0  # writers of the new residual dimensions learned


def test_tie_relaxed_recursive():
    c = make(0, **LLAMAISH)  # bias-free: exact at full rank
    ref = logits(c)
    for init in ('average', 'stepwise', 'lower'):
        g = grow([c], 'tie', n_layer=2, init=init, lora_rank=32)
        assert g['model_args']['layer_map'] == [0, 1, 0, 1] and g['model_args']['n_layer'] == 2
        assert (logits(g) - ref).abs().max() <= 1e-5, init
    g0 = grow([c], 'tie', n_layer=2, lora_rank=0)  # pure recursion: no adapters, half the blocks
    assert not any(k.startswith('adapters.') for k in g0['model']) and g0['provenance']['trainable'] == 'all'
    assert g0['param_counts']['unique'] < build_model(c).param_counts()['unique']
    errs = [(logits(grow([c], 'tie', n_layer=2, lora_rank=r)) - ref).abs().max() for r in (0, 16)]
    assert errs[0] > errs[1] > 1e-5
    g = grow([make(0)], 'tie', lora_rank=8)  # with biases: runs (not exact: a LoRA cannot carry biases)
    assert g['param_counts'] == build_model(g).param_counts()


def test_tied_virtual_layers_share_storage():
    c = make(0)
    copies, tied = grow([c], 'stack'), grow([c], 'stack', tied=True)
    assert tied['model_args']['layer_map'] == [0, 1, 2, 3, 0, 1, 2, 3] and tied['model_args']['n_layer'] == 4
    assert tied['provenance']['new_blocks'] == [] and [l['block'] for l in tied['provenance']['layers']] == [0, 1, 2, 3] * 2
    assert torch.equal(logits(tied), logits(copies))
    pc = build_model(tied).param_counts()
    assert pc['logical'] == build_model(copies).param_counts()['unique'] and pc['unique'] < pc['logical']
    ad = grow([c], 'stack', tied=True, lora_rank=4, ia3=True, adapter_layers='virtual')
    keys = {k.split('.')[1] for k in ad['model'] if k.startswith('adapters.')}
    assert keys == {'4', '5', '6', '7'} and 'adapters.4.lora.qkv.lora_A' in ad['model']  # repeated occurrences only
    assert torch.allclose(logits(ad), logits(copies), atol=1e-6)  # adapters start as the identity
    assert order(grow([tagged(c, 0)], 'interleave', tied=True)) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_sources_with_virtual_layers_are_materialised():
    c = make(0)
    virt = build_model(c, layer_map=[0, 1, 1, 2, 3], lora_rank=4)
    with torch.no_grad():
        for n, p in virt.named_parameters():
            if 'lora_B' in n:
                p.normal_()
    ck = dict(c, model=virt.state_dict(), model_args=virt.config.to_dict())
    g = grow([ck], 'llama_pro', every=5)  # exact, so the grown model must compute what the virtual one did
    assert g['model_args']['n_layer'] == 6 and g['model_args']['layer_map'] is None
    assert (logits(g) - logits(ck)).abs().max() <= 1e-5


def test_lesa_svd_bookkeeping_and_determinism():
    for L in (3, 6):  # 3 layers: c_fc's concatenation is tall, 6: wide (the two branches of grow.svd)
        c = make(0, n_layer=L)
        for name, key, rows in lesa.matrix_types(c['model_args']):
            Ws = [c['model'][f'transformer.h.{l}.{key}'][rows] for l in range(L)]
            US, Vh = lesa.svd(torch.cat(Ws, dim=1))
            for l, W in enumerate(Ws):
                V = Vh[:, l * W.shape[1]:(l + 1) * W.shape[1]]
                assert (US @ V - W).norm() / W.norm() < 1e-5, (L, name, l)
    c = make(0, n_layer=6)
    g = grow([c], 'lesa', lesa_epochs=2)  # default range: the upper half
    assert origins(g) == ['a:0', 'a:1', 'a:2', 'lesa(a:2,a:3)', 'a:3', 'lesa(a:3,a:4)', 'a:4', 'lesa(a:4,a:5)', 'a:5']
    assert g['provenance']['new_blocks'] == [3, 5, 7] and set(g['provenance']['lesa']) == {'q', 'k', 'v', 'o', 'fc', 'proj'}
    again = grow([c], 'lesa', lesa_epochs=2)
    assert all(torch.equal(v, again['model'][k]) for k, v in g['model'].items())
    assert origins(grow([c], 'lesa', lesa_range='1:3', lesa_epochs=1))[1:4] == ['lesa(a:0,a:1)', 'a:1', 'lesa(a:1,a:2)']
    ln = g['model']['transformer.h.3.ln_1.weight']  # norms: the mean of the two neighbours
    assert torch.allclose(ln, (c['model']['transformer.h.2.ln_1.weight'] + c['model']['transformer.h.3.ln_1.weight']) / 2)
    llama3 = make(0, **dict(LLAMAISH, n_layer=3))  # SwiGLU (c_up), GQA, and the tall-SVD branch for c_fc
    assert logits(grow([llama3], 'lesa', lesa_epochs=1)).isfinite().all()


def test_lesa_predicts_in_the_orthonormal_svd_basis(monkeypatch):
    """Per matrix type, LESA factors all layers' weights side by side as W = (U S) Vh with orthonormal rows Vh
    (layer l's coefficients V_l, its columns) and orthogonal columns U S, learns V_i from (V_i-1, V_i+1), and
    the layer it inserts between i-1 and i is (U S) net(V_i-1, V_i): checked on the grown checkpoint against
    the coefficients and predictor LESA trained."""
    fitted = []
    real = lesa.fit_predictor
    def spy(V, *args):
        net, loss = real(V, *args)
        fitted.append((V, net))
        return net, loss
    monkeypatch.setattr(lesa, 'fit_predictor', spy)
    c = make(0, n_layer=6)  # every W wide and well conditioned: the Gram-matrix SVD is accurate to fp32 round-off
    g = grow([c], 'lesa', lesa_epochs=1, lesa_range='4:6')
    assert origins(g)[3:] == ['a:3', 'lesa(a:3,a:4)', 'a:4', 'lesa(a:4,a:5)', 'a:5']
    types = lesa.matrix_types(c['model_args'])
    assert len(fitted) == len(types)
    for (name, key, rows), (V, net) in zip(types, fitted):
        W = torch.cat([c['model'][f'transformer.h.{l}.{key}'][rows] for l in range(6)], dim=1)
        Vh = V.reshape(V.shape[0], -1)
        assert torch.allclose(Vh @ Vh.T, torch.eye(len(Vh)), atol=1e-4), name  # orthonormal rows
        US = W @ Vh.T
        assert (US @ Vh - W).norm() / W.norm() < 1e-5, name  # the basis reproduces every layer
        gram = US.T @ US  # U S: orthogonal columns, descending norms S
        assert (gram - torch.diag(gram.diagonal())).abs().max() < 1e-4 * gram.diagonal().max(), name
        assert (gram.diagonal()[1:] <= gram.diagonal()[:-1] * (1 + 1e-4)).all(), name
        for block, i in ((4, 4), (6, 5)):  # the new layer before source layer i
            want = US @ net(torch.cat([V[:, i - 1], V[:, i]], dim=1))
            got = g['model'][f'transformer.h.{block}.{key}'][rows]
            assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (name, block)


class Seen(Exception):
    pass


def test_operators_that_train_run_on_the_given_device(monkeypatch):
    """LiGO's operator (its maps, tables and the sources it reads) and LESA's SVD inputs and predictors live on
    grow()'s run.device: the meta device here (no GPU needed); a spy records the devices and stops the work."""
    import ligo
    seen = {}

    def ligo_spy(op, recompute=False):
        seen['ligo'] = {t.device.type for t in [*op.parameters(), *(v for l in op.layers for d in l for v in d.values())]}
        raise Seen

    def lesa_spy(V, hidden, *args):
        seen['lesa'] = {V.device.type}
        raise Seen

    monkeypatch.setattr(ligo.LiGO, 'tensors', ligo_spy)
    monkeypatch.setattr(lesa, 'fit_predictor', lesa_spy)
    batches = iter([(IDX, IDX)])
    with pytest.raises(Seen):
        grow([make(0)], 'ligo', batches=batches, run=G.Run('meta'), n_layer=8, ligo_steps=1)
    with pytest.raises(Seen):
        grow([make(0)], 'lesa', run=G.Run('meta'))
    assert seen == {'ligo': {'meta'}, 'lesa': {'meta'}}


def test_lesa_beats_duplication_on_a_trained_model(shared):
    """A 6-layer char model trained briefly on Shakespeare. LESA's predicted layers must start lower
    than duplicating a neighbour into the same places. (`random` insertion is not the bar: GPT-2's init
    gives the new blocks tiny output projections, so it is nearly the identity: ~base loss.)"""
    text = (shared / 'data' / 'tinyshakespeare' / 'input.txt').read_text()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(ch) for ch in text[:300_000]])
    train, val = data[:270_000], data[270_000:]
    T, B = 64, 24

    def batch(src, g):
        ix = torch.randint(len(src) - T - 1, (B,), generator=g)
        return torch.stack([src[i:i + T] for i in ix]), torch.stack([src[i + 1:i + T + 1] for i in ix])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls; a busy machine makes a second thread a large slowdown
    try:
        torch.manual_seed(0)
        cfg = GPTConfig(n_layer=6, n_head=4, n_embd=64, block_size=T, vocab_size=len(chars))
        model, g = GPT(cfg), torch.Generator().manual_seed(0)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(200):
            _, loss = model(*batch(train, g))
            opt.zero_grad()
            loss.backward()
            opt.step()
        gv = torch.Generator().manual_seed(1)
        val_batches = [batch(val, gv) for _ in range(8)]

        @torch.no_grad()
        def val_loss(ck):
            m = build_model(ck).eval()
            return sum(m(x, y)[1].item() for x, y in val_batches) / len(val_batches)
        ck = dict(model=model.state_dict(), model_args=cfg.to_dict())
        base = val_loss(ck)
        lesa = val_loss(grow([ck], 'lesa'))  # new layers before layers 3, 4, 5
        lower = val_loss(grow([ck], 'map', map='0,1,2,2,3,3,4,4,5'))  # the same places, copies instead
        upper = val_loss(grow([ck], 'map', map='0,1,2,3,3,4,4,5,5'))
        rand = val_loss(grow([ck], 'random', every=2))
    finally:
        torch.set_num_threads(threads)
    assert lesa < min(lower, upper), (base, lesa, lower, upper)
    assert abs(rand - base) < 0.01 and lesa - base < 0.05, (base, lesa, rand)

def test_registry_declares_every_option_and_validates_up_front(monkeypatch):
    for name, m in G.METHODS.items():  # the declared options are exactly what the function takes
        params = inspect.signature(m.build).parameters
        own = {n for n, p in params.items() if n not in ('src', 'batches', 'head_from', 'run') and p.kind == p.POSITIONAL_OR_KEYWORD}
        dups = set(G.DUPLICATES) if any(p.kind == p.VAR_KEYWORD for p in params.values()) else set()
        assert set(m.options) == own | dups, name
    with pytest.raises(ValueError, match="unknown growth method 'stak'"):
        G.check_options('stak', {})
    with pytest.raises(ValueError, match='option every does not apply to method stack'):
        G.check_options('stack', {'every': 2})
    assert G.check_options('llama_pro', {'every': 2}) is G.METHODS['llama_pro']

    def learned(src, batches, n_layer=None):  # a method that learns from data gets the batches
        x, y = next(iter(batches))
        assert x.shape == IDX.shape
        return G.place(src, G.copies(src, G.stack_order(len(src[0].layers), n_layer=n_layer)))
    monkeypatch.setitem(G.METHODS, 'learned', G.Method(learned, ('n_layer',), 1, 'test', needs_data=True))
    with pytest.raises(ValueError, match=r'method learned needs training data \(--data DIR\)'):
        grow([make(0)], 'learned', n_layer=6)
    assert grow([make(0)], 'learned', batches=[(IDX, IDX)], n_layer=6)['model_args']['n_layer'] == 6

# -----------------------------------------------------------------------------
# command line


def run(repo, *args):
    return subprocess.run([sys.executable, 'grow.py', *map(str, args)], cwd=repo, capture_output=True, text=True)


def test_cli_writes_a_checkpoint_with_provenance(tmp_path, repo):
    a, b = tmp_path / 'a.pt', tmp_path / 'b.pt'
    save_checkpoint(make(0), a)
    save_checkpoint(tagged(make(1), 1), b)
    (tmp_path / 'fm.yml').write_text(f"slices:\n  - sources: [{{model: first, layer_range: [0, 4]}}]\n"
                                     f"  - sources: [{{model: '{b}', layer_range: [2, 4]}}]\n")
    r = run(repo, '--method', 'map', '--yaml', tmp_path / 'fm.yml', '--out', tmp_path / 'out' / 'fm.pt', f'first={a}')
    assert r.returncode == 0, r.stderr
    g = load_checkpoint(tmp_path / 'out' / 'fm.pt')  # b was loaded from the path the YAML names
    assert order(g)[4:] == [102, 103] and origins(g) == ['a:0', 'a:1', 'a:2', 'a:3', 'b:2', 'b:3']
    srcs = g['provenance']['sources']
    assert [s['path'] for s in srcs] == [str(a), str(b)] and srcs[1]['sha256'] == hashlib.sha256(b.read_bytes()).hexdigest()
    assert g['tokens_seen'] == 2000 and build_model(g).param_counts() == g['param_counts']
    assert not [p for p in (tmp_path / 'out').iterdir() if p.name != 'fm.pt']  # no temp files left


def test_cli_ligo_learns_from_data_and_counts_its_cost(tmp_path, repo):
    a, data = tmp_path / 'a.pt', tmp_path / 'data'
    save_checkpoint(make(0), a)
    data.mkdir()
    for split in ('train', 'val'):
        torch.randint(0, 64, (3000,), generator=torch.Generator().manual_seed(1)).numpy().astype('uint16').tofile(data / f'{split}.bin')
    r = run(repo, '--method', 'ligo', '--n_layer', 8, '--ligo_steps', 2, '--out', tmp_path / 'g.pt', a)
    assert r.returncode != 0 and r.stderr.strip() == 'error: method ligo needs training data (--data DIR)'
    assert not (tmp_path / 'g.pt').exists()
    r = run(repo, '--method', 'ligo', '--n_layer', 8, '--ligo_steps', 2, '--batch_size', 3, '--data', data,
            '--out', tmp_path / 'g.pt', a)
    assert r.returncode == 0, r.stderr
    g = load_checkpoint(tmp_path / 'g.pt')
    info = g['provenance']['ligo']
    assert g['model_args']['n_layer'] == 8 and info['steps'] == 2 and info['tokens'] == 2 * 3 * 16
    assert g['tokens_seen'] == 1000 + info['tokens'] and g['flops_spent'] == 1e9 + info['flops'] > 1e9


def test_cli_bad_inputs_fail_in_one_line_without_output(tmp_path, repo):
    a, b, wide = tmp_path / 'a.pt', tmp_path / 'b.pt', tmp_path / 'wide.pt'
    save_checkpoint(make(0), a)
    save_checkpoint(make(1), b)
    save_checkpoint(make(2, n_embd=48), wide)
    (tmp_path / 'junk.pt').write_bytes(b'not a checkpoint at all')
    torch.save({'weights': torch.zeros(2)}, tmp_path / 'other.pt')
    (tmp_path / 'bad.yml').write_text("slices: [ {sources: [model: a\n")
    (tmp_path / 'noslices.yml').write_text("models:\n  - model: a\n")
    out = tmp_path / 'out.pt'
    cases = {
        'unknown method': (['--method', 'fold', a], 'unknown growth method'),
        'index out of range': (['--method', 'map', '--map', 'a:0,a:9', a], 'layer 9 out of range'),
        'mismatched sources': (['--method', 'interleave', a, wide], 'differ in n_embd'),
        'unreadable file': (['--method', 'stack', tmp_path / 'junk.pt'], 'cannot read checkpoint'),
        'not a checkpoint': (['--method', 'stack', tmp_path / 'other.pt'], 'not a nanogrow checkpoint'),
        'missing file': (['--method', 'stack', tmp_path / 'nope.pt'], 'not found'),
        'bad yaml': (['--method', 'map', '--yaml', tmp_path / 'bad.yml', a], 'bad YAML'),
        'yaml without slices': (['--method', 'map', '--yaml', tmp_path / 'noslices.yml', a], "'slices:'"),
        'option of another method': (['--method', 'stack', '--every', 2, a], 'does not apply'),
        'one-source method': (['--method', 'lesa', a, b], 'takes one source'),
        'unknown source name': (['--method', 'map', '--map', 'c:0', a, b], 'unknown source'),
        'data for a method without': (['--method', 'stack', '--data', tmp_path, a], '--data does not apply'),
        'unavailable device': (['--method', 'lesa', '--device', 'cuda:7', a], "device 'cuda:7'") if not torch.cuda.is_available()
        else (['--method', 'lesa', '--device', 'gpu', a], 'device must be'),
    }
    procs = {name: subprocess.Popen([sys.executable, 'grow.py', '--out', out, *map(str, args)], cwd=repo,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, (args, _) in cases.items()}
    for name, p in procs.items():
        _, err = p.communicate()
        lines = err.strip().splitlines()
        assert p.returncode != 0 and len(lines) == 1 and lines[0].startswith('error: '), (name, err)
        assert cases[name][1] in lines[0], (name, lines[0])
    assert not out.exists() and not list(tmp_path.glob('.out.pt*'))

# -----------------------------------------------------------------------------
# growth inside a training run
