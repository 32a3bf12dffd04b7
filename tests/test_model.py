"""model.py: tied (virtual) layers, adapters, low-rank substitution, freezing, KV cache, accounting."""
import io
import math

import pytest
import torch

from model import GPT, GPTConfig

TINY = dict(block_size=32, vocab_size=61, n_layer=4, n_head=4, n_embd=32)
FAMILIES = {
    'gpt2': {},
    'llama': dict(norm='rmsnorm', pos='rope', mlp='swiglu', n_kv_head=2, bias=False, mlp_hidden=48),
    'llama2c': dict(norm='rmsnorm', pos='rope', rope_layout='interleaved', mlp='swiglu', n_kv_head=2, bias=False),
    'neo': dict(qkv_bias=False, mlp='gelu_tanh', attn_scale=1.0, attn_window=[0, 5, 0, 5]),
}


def make(seed=0, **kw):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **kw}))
    model.eval()
    return model


def randomize_adapters(model):
    # trained adapters are not identities; make them non-trivial so merge tests mean something
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_B' in n:
                p.normal_(0, 0.05)
            elif 'ia3' in n:
                p.normal_(1, 0.2)


def test_loss_at_init_is_ln_vocab():
    model = make()
    x, y = torch.randint(0, 61, (2, 8, 32))
    _, loss = model(x, y)
    assert abs(loss.item() - math.log(61)) < 0.1


@pytest.mark.parametrize('family', FAMILIES)
def test_kv_cache_matches_full_forward_and_greedy_generation(family):
    model = make(layer_map=[0, 1, 2, 3, 2, 3], **{**FAMILIES[family], 'attn_window': None}) if family != 'neo' \
        else make(**FAMILIES[family])
    x = torch.randint(0, 61, (2, 20))
    full, _ = model(x)
    cache = model.new_kv_cache()
    parts = [model(x[:, :7], kv_cache=cache)[0]] + [model(x[:, t:t + 1], kv_cache=cache)[0] for t in range(7, 20)]
    assert (torch.cat(parts, 1) - full).abs().max() < 1e-5
    # generating past block_size exercises the cache reset path too
    a = model.generate(x[:, :4], 40, temperature=0, use_cache=True)
    b = model.generate(x[:, :4], 40, temperature=0, use_cache=False)
    assert torch.equal(a, b)


def test_each_logical_layer_owns_its_cache_slot():
    model = make(layer_map=[0, 0, 0, 0])
    cache = model.new_kv_cache()
    model(torch.randint(0, 61, (1, 5)), kv_cache=cache)
    assert len(cache) == 4 and len({id(k) for k, _ in cache}) == 4
    assert not torch.equal(cache[0][0], cache[1][0])  # same weights, different inputs -> different keys


@pytest.mark.parametrize('family', ['gpt2', 'llama'])
def test_sampling_memory_counts_the_stored_weights_and_the_kv_cache_of_a_full_context(family):
    model = make(layer_map=[0, 1, 1, 2, 2, 3], **FAMILIES[family])
    cache = model.new_kv_cache()
    model(torch.randint(0, 61, (1, TINY['block_size'])), kv_cache=cache)  # a full context
    held = sum(t.numel() * t.element_size() for slot in cache for t in slot)
    stored = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in [*model.parameters(), *model.buffers()]}
    assert model.sampling_memory() == dict(weights=sum(stored.values()), kv_cache=held)
    assert model.sampling_memory(2)['kv_cache'] == held // 2
    assert make(**FAMILIES[family]).sampling_memory()['kv_cache'] == held * 4 // 6  # per logical layer


def test_tied_layers_share_storage_and_accumulate_gradients():
    model = make(layer_map=[0, 1, 1, 1, 2, 2, 2, 3])
    assert len(model.transformer.h) == 4
    counts = model.param_counts()
    assert counts['logical'] > counts['unique']
    untied = make(n_layer=8)
    assert counts['logical'] == untied.param_counts()['logical']
    # gradient of a shared weight = sum of the gradients of its occurrences: compare to an
    # untied copy whose blocks 1..3 hold block 1's weights
    model.train(False)
    x = torch.randint(0, 61, (2, 16))
    copy = GPT(GPTConfig(**{**TINY, 'n_layer': 8}))
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith('transformer.h.')}
    for i, p in enumerate(model.config.layer_map):
        for k, v in model.transformer.h[p].state_dict().items():
            sd[f'transformer.h.{i}.{k}'] = v.clone()
    copy.load_state_dict(sd)
    model(x, x)[1].backward()
    copy(x, x)[1].backward()
    shared = model.transformer.h[1].mlp.c_fc.weight.grad
    summed = sum(copy.transformer.h[i].mlp.c_fc.weight.grad for i in (1, 2, 3))
    assert torch.allclose(shared, summed, atol=1e-6)


def test_unique_params_flat_as_repeats_are_added():
    uniq = {make(layer_map=list(range(4)) * r).param_counts()['unique'] for r in (1, 2, 3, 4)}
    assert len(uniq) == 1


def test_tied_checkpoint_size_tracks_physical_layers():
    def size(model):
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        return buf.tell()
    base, tied, deep = size(make()), size(make(layer_map=list(range(4)) * 3)), size(make(n_layer=12))
    assert tied < base * 1.05 and deep > base * 2


@pytest.mark.parametrize('family', FAMILIES)
def test_untrained_adapters_are_exact_identity(family):
    x = torch.randint(0, 61, (2, 16))
    base = make(**FAMILIES[family])
    adapted = make(lora_rank=4, ia3=True, **FAMILIES[family])
    sd = {k: v for k, v in adapted.state_dict().items() if not k.startswith('adapters.')}
    assert set(sd) == set(base.state_dict())
    adapted.load_state_dict({**adapted.state_dict(), **base.state_dict()})
    assert torch.equal(base(x)[0], adapted(x)[0])


def adapted_tied(family):
    """A 6-logical-layer model on 4 blocks with trained-looking LoRA and IA3 on every logical layer."""
    kw = dict(FAMILIES[family], layer_map=[0, 1, 1, 2, 3, 3], lora_rank=4, ia3=True)
    kw['attn_window'] = [0, 5, 0, 5, 0, 5] if family == 'neo' else None
    model = make(**kw)
    randomize_adapters(model)
    return model


@pytest.mark.parametrize('family', FAMILIES)
def test_merge_equals_adapted_tied_model(family):
    model = adapted_tied(family)
    merged = model.merged().eval()
    assert merged.config.layer_map is None and merged.config.n_layer == 6
    assert not any(n.startswith('adapters.') for n, _ in merged.named_parameters())
    x = torch.randint(0, 61, (2, 24))
    assert (model(x)[0] - merged(x)[0]).abs().max() <= 1e-5


@pytest.mark.parametrize('family', FAMILIES)
def test_folded_and_activation_adapter_paths_agree(family):
    # a trainable base folds LoRA/IA3 into its weights; a frozen one runs them on the activations
    model = adapted_tied(family)
    x = torch.randint(0, 61, (2, 24))
    grads = []
    for spec in ('all', 'adapters'):
        model.set_trainable(spec)
        model.zero_grad(set_to_none=True)
        loss = model(x, x)[1]
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if n.startswith('adapters.')}))
    (l_fold, g_fold), (l_act, g_act) = grads
    assert abs(l_fold - l_act) <= 1e-5
    for n, g in g_act.items():
        assert torch.allclose(g_fold[n], g, rtol=1e-4, atol=1e-6), n


def test_adapters_only_on_virtual_layers():
    model = make(layer_map=[0, 1, 1, 2, 3, 0], lora_rank=2, adapter_layers='virtual')
    adapted = sorted({int(n.split('.')[1]) for n, _ in model.named_parameters() if n.startswith('adapters.')})
    assert adapted == [2, 5]


def test_lowrank_parameter_counts_and_no_dense_weight():
    d, r_attn, r_mlp = 32, 5, 7
    model = make(lowrank_attn=r_attn, lowrank_mlp=r_mlp)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith(('c_attn.weight', 'c_fc.weight', 'c_proj.weight')) for n in names)
    dense = make()
    per_block_dense = sum(p.numel() for n, p in dense.transformer.h[0].named_parameters() if n.endswith('.weight') and 'ln' not in n)
    per_block_lowrank = sum(p.numel() for n, p in model.transformer.h[0].named_parameters() if n.endswith(('.A', '.B')))
    # c_attn: 3 factors of rank r (q, k, v), c_proj: r(d+d); c_fc: r(d+4d), c_proj: r(4d+d)
    expect = (3 * r_attn * d + 3 * d * r_attn) + r_attn * 2 * d + 2 * r_mlp * 5 * d
    assert per_block_lowrank == expect and per_block_lowrank < per_block_dense
    x = torch.randint(0, 61, (2, 16))
    assert (model(x)[0] - model.merged()(x)[0]).abs().max() < 1e-5


def test_rank_schedules():
    from model import resolve_ranks
    assert resolve_ranks('inc:5:100', 4, 384, 384, 1, 'x') == [5, 14, 37, 100]
    assert resolve_ranks('dec:5:100', 4, 384, 384, 1, 'x') == [100, 37, 14, 5]
    assert resolve_ranks('match', 2, 384, 3 * 384, 3, 'x') == [192, 192]  # about the dense parameter count
    assert resolve_ranks('match', 1, 384, 4 * 384, 1, 'x') == [307]         # and its MLP rank


@pytest.mark.parametrize('kw, msg', [
    (dict(layer_map=[0, 4]), 'outside the 4 physical blocks'),
    (dict(layer_map=[]), 'non-empty'),
    (dict(layer_map=[0, 1.5]), 'must be integers'),
    (dict(layer_map='0,1'), 'non-empty list'),
    (dict(lowrank_attn=-1), 'rank -1'),
    (dict(lowrank_mlp=[4, 4]), 'lists 2 ranks'),
    (dict(lowrank_mlp='huge'), "use an int"),
    (dict(lowrank_attn=1000), 'rank 1000'),
    (dict(lora_targets=['qkv', 'nope']), 'unknown lora_targets'),
    (dict(n_kv_head=3), 'must divide'),
    (dict(norm_eps=0), 'norm_eps must be a positive number'),
    (dict(rope_theta=float('inf')), 'rope_theta must be a positive number'),
    (dict(pos='rope', n_embd=36), 'even head size'),
    (dict(bias='yes'), 'bias must be True or False'),
    (dict(attn_window=[0, -1, 0, 0]), 'attn_window entries'),
    (dict(lora_targets='qkv'), 'lora_targets must be a list'),
    (dict(n_head=True), 'n_head must be a positive integer'),
])
def test_bad_config_is_one_line_error(kw, msg):
    with pytest.raises(ValueError, match=msg) as e:
        GPT(GPTConfig(**{**TINY, **kw}))
    assert '\n' not in str(e.value)


def test_train_only_adapters_leaves_base_bitwise_unchanged():
    model = make(layer_map=[0, 1, 2, 3, 1, 2], lora_rank=4, ia3=True)
    model.train()
    model.set_trainable('adapters')
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith('adapters.')}
    opt = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu')
    assert sum(p.numel() for g in opt.param_groups for p in g['params']) == model.param_counts()['trainable']
    for _ in range(5):
        x = torch.randint(0, 61, (4, 16))
        model(x, x)[1].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    for n, p in model.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if 'lora_B' in n)


def test_set_trainable_new_and_regex_and_errors():
    model = make()
    model.set_trainable('new', new_blocks=[1, 3])
    train = {n.split('.')[2] for n, p in model.named_parameters() if p.requires_grad}
    assert train == {'1', '3'}
    model.set_trainable(r'ln_f|wte')
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {'transformer.wte.weight', 'transformer.ln_f.weight', 'transformer.ln_f.bias'}
    for spec, kw in [('adapters', {}), ('new', {}), ('nomatch$', {}), ('(', {})]:
        with pytest.raises(ValueError):
            model.set_trainable(spec, **kw)


def test_flops_count_logical_depth():
    shallow, tied = make(), make(layer_map=[0, 1, 2, 3] * 2)
    deep = make(n_layer=8)
    assert tied.flops_per_token() == deep.flops_per_token() > shallow.flops_per_token()


def test_config_dict_round_trip():
    cfg = GPTConfig(**TINY, layer_map=[0, 1, 1], lowrank_attn='inc:2:8', attn_window=[0, 4, 0])
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match='unknown model config keys'):
        GPTConfig.from_dict({**cfg.to_dict(), 'n_layers': 3})


@pytest.mark.parametrize('family', ['gpt2', 'llama'])
def test_activation_checkpointing_gives_identical_gradients(family):
    # dropout everywhere and a tied block with LoRA: the recompute must redraw the same dropout masks
    model = make(**FAMILIES[family], dropout=0.1, layer_map=[0, 1, 1, 2, 3, 3], lora_rank=2, lora_dropout=0.1)
    randomize_adapters(model)
    model.train()
    x = torch.randint(0, TINY['vocab_size'], (2, 16), generator=torch.Generator().manual_seed(1))
    grads, losses = [], []
    for enabled in (False, True):
        model.set_activation_checkpointing(enabled)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        _, loss = model(x, x)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert losses[0] == losses[1]
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.equal(grads[0][n], grads[1][n]), n
    assert 'activation_checkpointing' not in model.config.to_dict()


@pytest.mark.parametrize('layout', ['half', 'interleaved'])
def test_rotary_embedding_matches_the_closed_form_for_a_non_default_theta(layout):
    """Pair i of a head (dims i, i + hd/2 for 'half'; 2i, 2i+1 for 'interleaved') turns by t * theta^(-2i/hd) at position t."""
    from model import apply_rope
    theta, hd = 500.0, TINY['n_embd'] // TINY['n_head']
    model = make(pos='rope', rope_theta=theta, rope_layout=layout)
    angle = [[t * theta ** (-2 * i / hd) for i in range(hd // 2)] for t in range(TINY['block_size'])]
    want_cos = torch.tensor([[math.cos(a) for a in row] for row in angle])
    want_sin = torch.tensor([[math.sin(a) for a in row] for row in angle])
    assert torch.allclose(model.rope_cos, want_cos, atol=1e-5) and torch.allclose(model.rope_sin, want_sin, atol=1e-5)
    first, second = (lambda i: i, lambda i: i + hd // 2) if layout == 'half' else (lambda i: 2 * i, lambda i: 2 * i + 1)
    for i in range(hd // 2):  # rotate the unit vector of the pair's first dim at every position
        x = torch.zeros(1, 1, TINY['block_size'], hd)
        x[..., first(i)] = 1.0
        y = apply_rope(x, model.rope_cos, model.rope_sin, layout)[0, 0]
        assert torch.allclose(y[:, first(i)], want_cos[:, i], atol=1e-5)
        assert torch.allclose(y[:, second(i)], want_sin[:, i], atol=1e-5)
        assert torch.allclose(y.norm(dim=-1), torch.ones(TINY['block_size']), atol=1e-5)  # only that pair moved
