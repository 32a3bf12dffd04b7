"""ligo.py: before training LiGO is exactly the direct operator it starts from (stack, interleave, Net2Net,
both; one and two sources), side by side is block-diagonal, training on real text lowers the held-out
loss and leaves the sources alone, and bad input is a one-line ValueError."""
import pytest
import torch

import ligo
from grow import grow as direct
from model import GPT, GPTConfig

from test_grow import GPT2ISH, IDX, LLAMAISH, make  # the same random checkpoints (norm gains and biases not 1/0)


def pair(ck):
    return ck['model_args'], ck['model']


@torch.no_grad()
def logits(sd, args, idx=IDX):
    model = GPT(GPTConfig.from_dict(args))
    model.load_state_dict(sd)
    return model.eval()(idx)[0]


CASES = {  # name: (number of sources, ligo options, the direct operator as grow.py builds it)
    'stack': (1, dict(n_layer=8), lambda a, b: direct([a], 'stack')),
    'interleave': (1, dict(n_layer=8, depth_init='interleave'), lambda a, b: direct([a], 'interleave')),
    'width': (1, dict(n_embd=64), lambda a, b: direct([a], 'width', factor=2)),
    'mlp_hidden': (1, dict(mlp_hidden=200), lambda a, b: direct([a], 'width', mlp_hidden=200)),
    'depth_and_width': (1, dict(n_layer=8, n_embd=96), lambda a, b: direct([direct([a], 'stack')], 'width', factor=3)),
    'two_stack': (2, dict(), lambda a, b: direct([a, b], 'stack')),
    'two_interleave': (2, dict(n_layer=16, depth_init='interleave'), lambda a, b: direct([a, b], 'interleave', factor=2)),
    # two copies of one model side by side: every residual dimension doubled, = Net2Net x2
    'side_by_side_same': (2, dict(n_embd=64), lambda a, b: direct([a], 'width', factor=2)),
}


@pytest.mark.parametrize('arch', ['gpt2', 'llama'])
@pytest.mark.parametrize('case', list(CASES))
def test_untrained_operator_is_the_direct_operator(case, arch):
    a = make(0, **(LLAMAISH if arch == 'llama' else GPT2ISH))
    b = a if case == 'side_by_side_same' else make(1, **(LLAMAISH if arch == 'llama' else GPT2ISH))
    k, options, build = CASES[case]
    sd, args, info = ligo.grow([pair(a), pair(b)][:k], steps=0, **options)
    ref = build(a, b)
    assert GPTConfig.from_dict(args).n_layer == ref['model_args']['n_layer']
    assert (logits(sd, args) - logits(ref['model'], ref['model_args'])).abs().max() <= 1e-5
    assert info['steps'] == 0 and info['flops'] == 0


def test_side_by_side_is_block_diagonal_and_not_function_preserving():
    a, b = make(0), make(1)
    sd, args, _ = ligo.grow([pair(a), pair(b)], n_embd=64, steps=0)
    assert (args['n_embd'], args['n_head'], args['mlp_hidden'], args['tie_embeddings']) == (64, 8, None, False)
    for key in ('transformer.h.2.mlp.c_fc.weight', 'transformer.h.2.mlp.c_proj.weight', 'transformer.h.2.attn.c_proj.weight'):
        W, (r, c) = sd[key], a['model'][key].shape
        assert torch.equal(W[:r, :c], a['model'][key]) and torch.equal(W[r:, c:], b['model'][key])
        assert not W[:r, c:].any() and not W[r:, :c].any()
    q = sd['transformer.h.0.attn.c_attn.weight'][:64]  # the query heads: a's 4 heads, then b's 4
    assert torch.equal(q[:32, :32], a['model']['transformer.h.0.attn.c_attn.weight'][:32]) and not q[:32, 32:].any()
    ea, eb = a['model']['transformer.wte.weight'], b['model']['transformer.wte.weight']  # tied: also the heads
    assert torch.equal(sd['transformer.wte.weight'], torch.cat([ea, eb], 1))
    assert torch.allclose(sd['lm_head.weight'], torch.cat([ea, eb], 1) / 2)
    # the norms see both streams at once: not the average of the two models' logits (README: what it preserves)
    mean = (logits(a['model'], a['model_args']) + logits(b['model'], b['model_args'])) / 2
    assert (logits(sd, args) - mean).abs().max() > 1e-3


def test_width_not_a_multiple_copies_the_first_dimensions():
    """32 -> 48: x' = [x, x[:16]] (the first two heads copied), readers divide the copied columns by 2.
    The norms then see 16 dimensions twice: not exact (README), unlike whole multiples."""
    a = make(0)
    sd, args, _ = ligo.grow([pair(a)], n_embd=48, steps=0)
    assert (args['n_head'], args['mlp_hidden'], args['tie_embeddings']) == (6, None, False)
    E = a['model']['transformer.wte.weight']
    assert torch.equal(sd['transformer.wte.weight'], torch.cat([E, E[:, :16]], 1))
    assert torch.allclose(sd['lm_head.weight'], torch.cat([E[:, :16] / 2, E[:, 16:], E[:, :16] / 2], 1))
    q = sd['transformer.h.1.attn.c_attn.weight'][:48]
    assert torch.equal(q[32:], q[:16])


def text_batches(ids, batch, T, seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        ix = torch.randint(len(ids) - T - 1, (batch,), generator=g)
        x = torch.stack([ids[i:i + T] for i in ix])
        yield x, torch.stack([ids[i + 1:i + 1 + T] for i in ix])


def test_training_the_operator_lowers_heldout_loss_and_keeps_the_source(shared):
    text = (shared / 'data' / 'tinyshakespeare' / 'input.txt').read_text()[:200_000]
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    train, val = ids[:180_000], ids[180_000:]
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=len(chars))
    small = GPT(cfg)
    opt = torch.optim.AdamW(small.parameters(), lr=3e-3)
    for _, (x, y) in zip(range(100), text_batches(train, 16, 32, 0)):
        loss = small(x, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    source = (cfg.to_dict(), small.state_dict())
    before = {k: v.clone() for k, v in source[1].items()}
    held = list(zip(range(8), text_batches(val, 32, 32, 1)))

    @torch.no_grad()
    def heldout(sd, args):
        m = GPT(GPTConfig.from_dict(args))
        m.load_state_dict(sd)
        return sum(m.eval()(*xy)[1].item() for _, xy in held) / len(held)

    options = dict(n_layer=4, n_embd=64)
    start = heldout(*ligo.grow([source], steps=0, **options)[:2])
    sd, args, info = ligo.grow([source], batches=text_batches(train, 16, 32, 2), steps=20, **options)
    end = heldout(sd, args)
    assert end < start - 0.01, (start, end)
    assert all(torch.equal(before[k], v) for k, v in source[1].items())
    grown = GPT(GPTConfig.from_dict(args))
    assert info['steps'] == 20 and info['tokens'] == 20 * 16 * 32 and len(info['losses']) == 20
    assert info['flops'] == grown.flops_per_token() * info['tokens'] + 4 * 20 * info['flops_build'] and info['flops_build'] > 0


@pytest.mark.parametrize('sources, options, message', [
    (lambda: [make(0), make(1, n_embd=64, n_head=4)], dict(), 'sources differ in n_embd'),
    (lambda: [make(0), make(1, vocab_size=65)], dict(), 'sources differ in vocab_size'),
    (lambda: [make(0)], dict(n_embd=36), 'multiple of 8 .whole heads'),
    (lambda: [make(0, **LLAMAISH)], dict(n_embd=40), 'multiple of 16 .whole heads and kv groups'),
    (lambda: [make(0), make(1), make(2)], dict(n_embd=64), r'must be 32 \(depth over their layers\) or 96'),
    (lambda: [make(0), make(1)], dict(n_embd=64, mlp_hidden=512), r'must be 256 \(side by side\)'),
    (lambda: [make(0)], dict(n_layer=6, depth_init='interleave'), 'multiple'),
    (lambda: [make(0)], dict(n_layer=8, steps=10), 'needs data'),
    (lambda: [make(0)], dict(), 'nothing to grow'),
    (lambda: [make(0, lora_rank=2)], dict(n_layer=8, steps=0), 'plain model'),
    (lambda: [dict(make(0), model_args=dict(make(0)['model_args'], n_layer=3))], dict(n_layer=8, steps=0), 'do not match'),
])
def test_bad_input_is_one_line_value_error(sources, options, message):
    with pytest.raises(ValueError, match=message) as e:
        ligo.grow([pair(ck) for ck in sources()], **options)
    assert '\n' not in str(e.value) and str(e.value).startswith('ligo: ')


def test_trains_inside_no_grad():
    """grow.py runs its methods under torch.no_grad(); the operator's steps must still learn."""
    x = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    start, _, _ = ligo.grow([pair(make(0))], n_layer=6, steps=0)
    with torch.no_grad():
        sd, _, info = ligo.grow([pair(make(0))], n_layer=6, batches=[(x, x.roll(-1, 1))] * 3, steps=3)
    assert len(info['losses']) == 3 and info['losses'][-1] < info['losses'][0]
    assert not torch.equal(sd['transformer.h.5.mlp.c_fc.weight'], start['transformer.h.5.mlp.c_fc.weight'])


def test_data_running_out_is_an_error():
    x = torch.zeros(2, 16, dtype=torch.long)
    with pytest.raises(ValueError, match='ran out after 2 of 5'):
        ligo.grow([pair(make(0))], n_layer=8, batches=[(x, x)] * 2, steps=5)
