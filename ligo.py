"""
LiGO, a learned linear growth operator ("Learning to Grow Pretrained Models for Efficient Transformer
Training", Wang et al., ICLR 2023, arXiv 2303.00980): the grown model's weights are a linear function of
the small models' weights, that function starts as a direct operator (stack or interleave in depth,
Net2Net copies in width), is trained for a few steps on the grown model's language-model loss with the
small weights frozen, and is then multiplied out into an ordinary checkpoint.

    state_dict, model_args, info = ligo.grow([(args, sd)], n_layer=8, n_embd=256, batches=stream, steps=100)

The operator, factorised (never a (D*D) x (d*d) matrix):
- width: one learned map per source s and dimension group g (residual stream 'res', query/key/value
  heads 'q'/'k'/'v', MLP hidden 'mlp'), B[g,s] (grown size x source size), shared by all layers.
  A weight that writes group r and reads group c grows as  B[r] W (B[c] / n[c])^T,  a bias or norm gain
  as B[r] b. Reading and writing use the same map (the paper's tying); n[c] (fixed) is the number of
  copies each source dimension has at init, bert2BERT's fan-in normalisation, so that the init is exactly
  Net2Net. The attention output (read by attn.c_proj) uses the value map (the query map with grouped-query
  attention, whose output is laid out like the query heads). Embeddings write the residual: E B^T;
  the head reads it: H (B/n)^T. Groups that do not grow have no map.
- depth: for every kind of tensor (q, k, v rows of c_attn, c_proj, c_fc, c_up, mlp c_proj, their biases,
  ln_1, ln_2) a table D_kind (grown layers x all source layers, concatenated a's then b's ...):
  grown layer l = sum_j D_kind[l, j] * (width-grown source layer j). Embeddings, wpe, ln_f and head mix
  the sources with one learned coefficient per source.
Sources: one model (residual d -> D >= d in whole heads; the init is exact, Net2Net, when D is a multiple
of d, otherwise the norms see the copied dimensions twice), several models of one width d with D = d (depth
mixing over their concatenated layers, embeddings from the first), or k models side by side, D = k*d
(each source's residual stream, heads and MLP units in their own block; block-diagonal at init, head
averaging the k models' logits).
"""
import math
import time
from contextlib import nullcontext

import torch
import torch.nn as nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from checkpoint import strip_prefixes
from model import GPT, GPTConfig, rope_tables

# model_args that may differ between sources: they do not change any tensor's shape
PER_SOURCE_ARGS = ('n_layer', 'attn_window', 'dropout', 'tie_embeddings')
DEPTH_INITS = ('stack', 'interleave')


def check_sources(sources):
    """(model_args, state_dict) pairs -> [(GPTConfig, state_dict)], checked to be plain and complete."""
    if not isinstance(sources, (list, tuple)) or not sources:
        raise ValueError("ligo: no sources (give a list of (model_args, state_dict) pairs)")
    out = []
    for j, pair in enumerate(sources):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, dict) for x in pair)):
            raise ValueError(f"ligo: source {j} is not a (model_args, state_dict) pair")
        args, sd = pair[0], strip_prefixes(pair[1])
        try:
            cfg = GPTConfig.from_dict(args)
        except (TypeError, ValueError) as e:
            raise ValueError(f"ligo: source {j}: bad model_args ({e})") from None
        if cfg.layer_map is not None or cfg.lora_rank or cfg.ia3 or cfg.lowrank_attn or cfg.lowrank_mlp:
            raise ValueError(f"ligo: source {j} has virtual layers, adapters or low-rank factors; "
                             "give a plain model (GPT.merged())")
        with torch.device('meta'):
            want = {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()}
        for k in sorted(set(want) | set(sd)):
            if k not in sd or k not in want or tuple(sd[k].shape) != want[k]:
                what = 'missing' if k not in sd else 'unexpected' if k not in want else f'shape {tuple(sd[k].shape)} for'
                raise ValueError(f"ligo: source {j}: weights do not match its model_args ({what} {k})")
        out.append((cfg, sd))
    first = out[0][0].to_dict()
    for j, (cfg, _) in enumerate(out[1:], 1):
        for k, v in cfg.to_dict().items():
            if k not in PER_SOURCE_ARGS and v != first[k]:
                raise ValueError(f"ligo: sources differ in {k}: source 0 has {first[k]!r}, source {j} {v!r}")
    return out


def depth_plan(depths, n_layer, init, side_by_side):
    """For every grown layer the (source, layer) pairs it starts as: one, or one per source side by side.
    stack: the concatenated layer list repeated (a0..aL-1, b0..; a0..); interleave: each layer repeated in
    place (0,0,1,1,...; with several sources a0,b0,a1,b1,...). Side by side each source follows its own."""
    if init not in DEPTH_INITS:
        raise ValueError(f"ligo: depth_init must be one of {', '.join(DEPTH_INITS)}, got {init!r}")
    if side_by_side or len(depths) == 1:
        if init == 'interleave' and any(n_layer % L for L in depths):
            raise ValueError(f"ligo: interleave needs n_layer={n_layer} to be a multiple of every source's depth {depths}")
        pick = (lambda L, l: l % L) if init == 'stack' else (lambda L, l: l // (n_layer // L))
        return [[(s, pick(L, l)) for s, L in enumerate(depths)] for l in range(n_layer)]
    if init == 'stack':
        unit = [(s, i) for s, L in enumerate(depths) for i in range(L)]
        return [[unit[l % len(unit)]] for l in range(n_layer)]
    L, k = depths[0], len(depths)
    if any(x != L for x in depths) or n_layer % (k * L):
        raise ValueError(f"ligo: interleave over {k} sources needs equal depths and n_layer a multiple of "
                         f"{k}x their depth (depths {depths}, n_layer {n_layer})")
    f = n_layer // (k * L)
    return [[(s, i)] for i in range(L) for _ in range(f) for s in range(k)]


def parts_of(cfg):
    """The tensors of one block as parts (name, key, row slice, group written, group read). q, k and v
    are row slices of the fused c_attn, each with its own depth table and map."""
    hd = cfg.n_embd // cfg.n_head
    nq, nkv = cfg.n_head * hd, (cfg.n_kv_head or cfg.n_head) * hd
    qkv = [('q', slice(0, nq)), ('k', slice(nq, nq + nkv)), ('v', slice(nq + nkv, nq + 2 * nkv))]
    attn_out = 'v' if nkv == nq else 'q'
    parts = {'attn.c_attn.weight': [(f'{g}_weight', s, g, 'res') for g, s in qkv],
             'attn.c_attn.bias': [(f'{g}_bias', s, g, None) for g, s in qkv],
             'attn.c_proj.weight': [('o_weight', None, 'res', attn_out)],
             'mlp.c_fc.weight': [('fc_weight', None, 'mlp', 'res')],
             'mlp.c_up.weight': [('up_weight', None, 'mlp', 'res')],
             'mlp.c_proj.weight': [('down_weight', None, 'res', 'mlp')]}
    for key, name in (('attn.c_proj.bias', 'o_bias'), ('mlp.c_fc.bias', 'fc_bias'), ('mlp.c_up.bias', 'up_bias'),
                      ('mlp.c_proj.bias', 'down_bias'), ('ln_1.weight', 'ln1_weight'), ('ln_1.bias', 'ln1_bias'),
                      ('ln_2.weight', 'ln2_weight'), ('ln_2.bias', 'ln2_bias')):
        parts[key] = [(name, None, 'mlp' if key.startswith('mlp.c_') and key != 'mlp.c_proj.bias' else 'res', None)]
    return parts


# the non-block tensors: (group of their rows, group of their columns, columns read the residual)
REST = {'transformer.wte.weight': (None, 'res', False), 'transformer.wpe.weight': (None, 'res', False),
        'transformer.ln_f.weight': ('res', None, False), 'transformer.ln_f.bias': ('res', None, False),
        'lm_head.weight': (None, 'res', True)}


class LiGO(nn.Module):
    """The operator's learned tensors (width maps, depth tables, source mixes) and how they build the
    grown model's tensors from the frozen source tensors."""

    def __init__(self, sources, cfg, plan, side_by_side, mix_init):
        super().__init__()
        self.sources, self.cfg, self.tied = sources, cfg, cfg.tie_embeddings
        self.layers = [[sd_layer(sd, i) for i in range(c.n_layer)] for c, sd in sources]
        src_cfg = sources[0][0]
        self.parts = {k: v for k, v in parts_of(src_cfg).items() if k in self.layers[0][0]}
        self.rest = [k for k in REST if k in sources[0][1] and not (k == 'lm_head.weight' and self.tied)]
        k = len(sources)
        sizes = group_sizes(src_cfg)
        grown = group_sizes(cfg)
        self.maps, self.n = nn.ParameterDict(), {}
        for g, d in sizes.items():
            D = grown[g]
            for s in range(k):
                if side_by_side:
                    B = torch.zeros(D, d)
                    B[torch.arange(s * d, (s + 1) * d), torch.arange(d)] = 1.0
                elif D != d:
                    B = nn.functional.one_hot(torch.arange(D) % d, d).float()  # Net2Net: unit i copies i mod d
                else:
                    continue
                self.maps[f'{g}{s}'] = nn.Parameter(B)
                self.n[f'{g}{s}'] = B.sum(0)
        offsets = [sum(c.n_layer for c, _ in sources[:s]) for s in range(k)]
        start = torch.zeros(cfg.n_layer, offsets[-1] + sources[-1][0].n_layer)
        for l, pairs in enumerate(plan):
            for s, i in pairs:
                start[l, offsets[s] + i] = 1.0
        self.depth = nn.ParameterDict({name: nn.Parameter(start.clone()) for parts in self.parts.values() for name, *_ in parts})
        self.mix = nn.ParameterDict({key.replace('.', '_'): nn.Parameter(mix_init(key)) for key in self.rest})

    def to_(self, device):
        self.to(device)
        self.n = {g: v.to(device) for g, v in self.n.items()}
        f32 = lambda t: t.to(device=device, dtype=torch.float32)  # no copy when already there
        self.layers = [[{k: f32(v) for k, v in layer.items()} for layer in layers] for layers in self.layers]
        self.rest_src = [{k: f32(sd[k]) for k in self.rest} for _, sd in self.sources]
        return self

    def expand(self, t, s, rows, cols, reads):
        """B[rows] t (B[cols] / n[cols])^T (reads) or B[rows] t B[cols]^T, for a stack t of matrices
        (..., r, c) or vectors (..., r), multiplying in the cheaper order."""
        Br, Bc = self.maps.get(f'{rows}{s}'), self.maps.get(f'{cols}{s}')
        if Bc is not None and reads:
            Bc = Bc / self.n[f'{cols}{s}']
        if t.dim() == 2:
            return t if Br is None else t @ Br.T
        (R, r), (C, c) = Br.shape if Br is not None else (0, 0), Bc.shape if Bc is not None else (0, 0)
        if R and C and r * C * (c + R) < R * c * (r + C):
            return Br @ (t @ Bc.T)  # columns first costs r*C*(c+R) per layer, rows first R*c*(r+C)
        if Br is not None:
            t = Br @ t
        return t if Bc is None else t @ Bc.T

    def block_tensor(self, key):
        """One block tensor for all grown layers, (n_layer, *shape): width first (the source layers
        are fewer than the grown ones), then the depth mix."""
        out = []
        for name, rows, grows, gcols in self.parts[key]:
            S = torch.cat([self.expand(torch.stack([layer[key] if rows is None else layer[key][rows] for layer in layers]),
                                       s, grows, gcols, True) for s, layers in enumerate(self.layers)])
            w = self.depth[name]
            out.append((w @ S.flatten(1)).view(w.shape[0], *S.shape[1:]))
        return torch.cat(out, dim=1)

    def rest_tensor(self, key):
        c = self.mix[key.replace('.', '_')]
        rows, cols, reads = REST[key]
        return sum(c[s] * self.expand(rest[key][None], s, rows, cols, reads)[0] for s, rest in enumerate(self.rest_src))

    def tensors(self, recompute=False):
        """The grown model's parameters by state-dict name. recompute=True (training): each tensor is
        rebuilt in the backward pass instead of keeping the intermediates, so memory stays at about the
        grown weights and their gradients."""
        def run(f, key):
            return checkpoint(f, key, use_reentrant=False, preserve_rng_state=False) if recompute else f(key)
        out = {}
        for key in self.parts:
            for l, t in enumerate(run(self.block_tensor, key).unbind(0)):
                out[f'transformer.h.{l}.{key}'] = t
        for key in self.rest:
            out[key] = run(self.rest_tensor, key)
        if self.tied:
            out['lm_head.weight'] = out['transformer.wte.weight']
        return out


def sd_layer(sd, i):
    p = f'transformer.h.{i}.'
    return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}


def group_sizes(cfg):
    hd = cfg.n_embd // cfg.n_head
    nkv = (cfg.n_kv_head or cfg.n_head) * hd
    return dict(res=cfg.n_embd, q=cfg.n_head * hd, k=nkv, v=nkv, mlp=cfg.mlp_hidden or 4 * cfg.n_embd)


def grown_config(sources, n_layer, n_embd, mlp_hidden, depth_init):
    """Check the target shape against the sources; return (grown GPTConfig, plan, side_by_side)."""
    cfg0, k = sources[0][0], len(sources)
    d, H = cfg0.n_embd, cfg0.mlp_hidden or 4 * cfg0.n_embd
    depths = [c.n_layer for c, _ in sources]
    D = n_embd if n_embd is not None else d
    if not isinstance(D, int) or D < 1:
        raise ValueError(f"ligo: n_embd must be a positive integer, got {D!r}")
    side_by_side = k > 1 and D == k * d
    hd = d // cfg0.n_head
    group = hd * cfg0.n_head // (cfg0.n_kv_head or cfg0.n_head)  # the dims of the query heads sharing one kv head
    if k == 1 and (D < d or D % group):
        raise ValueError(f"ligo: n_embd={D} must be >= the source's {d} and a multiple of {group} (whole heads"
                         f"{' and kv groups' if group != hd else ''} of size {hd})")
    if k > 1 and D not in (d, k * d):
        raise ValueError(f"ligo: with {k} sources of width {d}, n_embd must be {d} (depth over their layers) "
                         f"or {k * d} (side by side), got {D}")
    H2 = mlp_hidden if mlp_hidden is not None else H * D // d
    if not isinstance(H2, int) or H2 < H or (side_by_side and H2 != k * H):
        need = f"{k * H} (side by side)" if side_by_side else f">= the source's {H}"
        raise ValueError(f"ligo: mlp_hidden={H2!r} must be {need}")
    L2 = n_layer if n_layer is not None else (depths[0] if k == 1 or side_by_side else sum(depths))
    if not isinstance(L2, int) or L2 < 1:
        raise ValueError(f"ligo: n_layer must be a positive integer, got {L2!r}")
    if k == 1 and (L2, D, H2) == (depths[0], d, H):
        raise ValueError("ligo: nothing to grow (n_layer, n_embd and mlp_hidden unchanged)")
    least = max(depths) if k == 1 or side_by_side else sum(depths)  # fewer would drop source layers
    if L2 < least:
        raise ValueError(f"ligo: n_layer={L2} would drop source layers (LiGO grows; at least {least}); "
                         "to keep fewer layers, make a smaller model with grow.py --method map")
    plan = depth_plan(depths, L2, depth_init, side_by_side)
    windows = [sources[pairs[0][0]][0].window(pairs[0][1]) for pairs in plan]
    args = dict(cfg0.to_dict(), n_layer=L2, n_embd=D, n_head=D // hd,
                n_kv_head=cfg0.n_kv_head and D // group, mlp_hidden=H2 if H2 != 4 * D else None,
                tie_embeddings=cfg0.tie_embeddings and D == d,
                attn_window=windows if len(set(windows)) > 1 else windows[0] or None)
    return GPTConfig.from_dict(args), plan, side_by_side


def grow(sources, n_layer=None, n_embd=None, mlp_hidden=None, depth_init='stack', batches=None, steps=100,
         lr=1e-2, device='cpu', autocast=nullcontext, progress=False):
    """Grow plain sources [(model_args, state_dict), ...] with LiGO. The operator starts as depth_init
    (stack | interleave) in depth and Net2Net / side-by-side copies in width, then trains `steps` Adam
    steps (learning rate lr; lr / source size for the width maps) on the grown model's LM loss over
    `batches`, an iterable of (X, Y) token tensors (B, T), with the sources frozen. autocast: a callable
    giving the caller's mixed-precision context; device: where the operator and the grown model's
    forward run (the sources are moved there); progress: a tqdm bar (step, loss) on a terminal. Returns (state_dict on the CPU in the sources' dtype,
    model_args, info); info counts the operator's training: steps, tokens, FLOPs, losses, wall time.
    The sources are not modified."""
    t0 = time.time()
    src = check_sources(sources)
    cfg, plan, side_by_side = grown_config(src, n_layer, n_embd, mlp_hidden, depth_init)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"ligo: steps must be an integer >= 0, got {steps!r}")
    if not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"ligo: lr must be a finite number > 0, got {lr!r}")
    if steps and batches is None:
        raise ValueError(f"ligo: training the operator for {steps} steps needs data (batches); "
                         "steps=0 gives the direct operator")
    k = len(src)
    first_only = k > 1 and not side_by_side  # depth over several sources: embeddings and head from the first

    def mix_init(key):
        if first_only:
            return torch.eye(k)[0]
        return torch.full((k,), 1.0 / k if key == 'lm_head.weight' else 1.0)  # side by side: average the logits

    op = LiGO(src, cfg, plan, side_by_side, mix_init).to_(device)
    with torch.device('meta'):
        model = GPT(cfg)
    model.train()
    buffers = {}
    if cfg.pos == 'rope':
        cos, sin = rope_tables(cfg)
        buffers = {'rope_cos': cos.to(device), 'rope_sin': sin.to(device)}
    # a map's entries each move by about lr per Adam step, and a grown row sums d of them: lr / d keeps a
    # map's step about as large, relative to the weights, as a depth coefficient's step of lr
    groups = [dict(params=list(op.depth.values()) + list(op.mix.values()), lr=lr)]
    groups += [dict(params=[B], lr=lr / B.shape[1]) for B in op.maps.values()]
    opt = torch.optim.Adam(groups) if steps else None
    batches = iter(batches) if steps else None
    losses, tokens = [], 0
    bar = tqdm(range(steps), desc='ligo', unit='step', disable=None if progress else True, leave=False, dynamic_ncols=True)
    for step in bar:
        try:
            X, Y = next(batches)
        except StopIteration:
            raise ValueError(f"ligo: the data ran out after {step} of {steps} steps") from None
        if X.dim() != 2 or X.shape != Y.shape or X.shape[1] > cfg.block_size:
            raise ValueError(f"ligo: batches must be (X, Y) pairs of shape (B, T) with T <= block_size "
                             f"{cfg.block_size}, got {tuple(X.shape)}, {tuple(Y.shape)}")
        if X.min() < 0 or X.max() >= cfg.vocab_size:
            raise ValueError(f"ligo: token ids must be in 0..{cfg.vocab_size - 1}, "
                             f"got {X.min().item()}..{X.max().item()}")
        X, Y = X.to(device), Y.to(device)
        with torch.enable_grad(), autocast():  # grow.py builds its outputs under no_grad
            _, loss = functional_call(model, {**op.tensors(recompute=True), **buffers}, (X, Y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        tokens += X.numel()
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        sd = op.tensors()
    dtype = next(iter(src[0][1].values())).dtype
    sd = {k: v.to(device='cpu', dtype=dtype) for k, v in sd.items()}
    if cfg.tie_embeddings:
        sd['lm_head.weight'] = sd['transformer.wte.weight']
    # each step builds the weights (forward), rebuilds them in backward (recompute) and differentiates
    # them (at most twice the forward's matmuls): 4x one materialisation, plus 6N per token for the model
    build = counter.get_total_flops()
    flops = model.flops_per_token() * tokens + 4 * build * steps
    info = dict(steps=steps, tokens=tokens, flops=float(flops), flops_build=float(build), lr=lr,
                loss_start=losses[0] if losses else None, loss_end=losses[-1] if losses else None, losses=losses,
                operator_params=sum(p.numel() for p in op.parameters()), time=time.time() - t0,
                mode='side_by_side' if side_by_side else 'depth' if first_only else 'one_source')
    return sd, cfg.to_dict(), info
