"""
The one GPT of nanogrow, in a single file. Read top to bottom:
1) GPTConfig: GPT-2 by default; options cover GPT-Neo and Llama-family models (RMSNorm, rotary,
   SwiGLU, grouped-query and local attention) and the three ideas we study:
   - weight-tied "virtual" layers: `layer_map[i]` is the physical block logical layer i runs,
   - per-logical-layer LoRA / IA3 adapters (so two runs of one block can differ),
   - low-rank substitution: dense matrices replaced by factors B @ A (no dense weight kept).
2) the building blocks (norm, rotary, linear/low-rank/LoRA, attention, MLP, block),
3) GPT: forward with an optional per-logical-layer KV cache, generate, merged(), optimizer,
   parameter/FLOP accounting and freezing.
"""
import math
import re
from dataclasses import dataclass, field, asdict, fields

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

LORA_TARGETS = ('qkv', 'attn_out', 'mlp_in', 'mlp_out')


# How a config key may differ between a checkpoint and a model built from it. Declared once here,
# on the fields themselves (litgpt keeps a feature's keys together the same way); checkpoint.py,
# grow.py and train.py read these tuples instead of keeping their own lists.
ADAPT = {'reuse': 'adapt'}    # may be set when reusing a checkpoint: adds adapters (identity at first) or
                              # virtual layers, or changes regularisation; never the shape of a stored weight
SOURCE = {'reuse': 'source'}  # may differ between the sources of one grown model: grow.py makes every
                              # source plain first (tied layers copied out, adapters and factors merged)


@dataclass
class GPTConfig:
    block_size: int = field(default=1024, metadata=SOURCE)
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = field(default=12, metadata=SOURCE)  # physical blocks (stored weights)
    n_head: int = 12
    n_kv_head: int = None    # grouped-query attention when < n_head; None = n_head
    n_embd: int = 768
    dropout: float = field(default=0.0, metadata=ADAPT)
    bias: bool = True        # biases in Linears and LayerNorms, like GPT-2
    qkv_bias: bool = None    # None = bias (GPT-Neo has none on q/k/v but keeps the rest)
    norm: str = 'layernorm'  # 'layernorm' | 'rmsnorm'
    norm_eps: float = 1e-5
    pos: str = 'learned'     # 'learned' (GPT-2) | 'rope'
    rope_theta: float = 10000.0
    rope_layout: str = 'half'  # 'half' (HF Llama: rotate halves) | 'interleaved' (Meta/llama2.c: pairs)
    mlp: str = 'gelu'        # 'gelu' | 'gelu_tanh' (GPT-2/Neo "gelu_new") | 'swiglu'
    mlp_hidden: int = None   # None = 4 * n_embd
    attn_scale: float = None  # None = 1/sqrt(head_dim); GPT-Neo uses 1.0
    # None | int | list per logical layer; 0 = global, W = last W tokens
    attn_window: object = field(default=None, metadata=ADAPT)
    tie_embeddings: bool = field(default=True, metadata=SOURCE)
    # None = identity; e.g. [0,1,1,1,2,2,2,3] = 8 logical layers on 4 blocks
    layer_map: list = field(default=None, metadata=ADAPT)
    # adapters per logical layer: LoRA (rank 0 = none) and IA3
    lora_rank: int = field(default=0, metadata=ADAPT)
    lora_alpha: float = field(default=16.0, metadata=ADAPT)
    lora_dropout: float = field(default=0.0, metadata=ADAPT)
    lora_targets: list = field(default_factory=lambda: list(LORA_TARGETS), metadata=ADAPT)
    ia3: bool = field(default=False, metadata=ADAPT)
    adapter_layers: str = field(default='all', metadata=ADAPT)  # 'all' | 'virtual' (only repeated occurrences of a block)
    # low-rank substitution: 0 dense | int | list per block | 'inc:a:b' | 'dec:a:b' | 'match'
    lowrank_attn: object = field(default=0, metadata=SOURCE)
    lowrank_mlp: object = field(default=0, metadata=SOURCE)

    def __post_init__(self):
        def check(ok, msg):
            if not ok:
                raise ValueError(msg)
        for key in ('block_size', 'vocab_size', 'n_layer', 'n_head', 'n_embd'):
            v = getattr(self, key)
            check(isinstance(v, int) and not isinstance(v, bool) and v > 0, f"{key} must be a positive integer, got {v!r}")
        check(self.mlp_hidden is None or (isinstance(self.mlp_hidden, int) and not isinstance(self.mlp_hidden, bool)
              and self.mlp_hidden > 0), f"mlp_hidden must be None or a positive integer, got {self.mlp_hidden!r}")
        for key in ('bias', 'tie_embeddings', 'ia3', 'qkv_bias'):
            v = getattr(self, key)
            check(isinstance(v, bool) or (key == 'qkv_bias' and v is None), f"{key} must be True or False, got {v!r}")
        for key in ('norm_eps', 'rope_theta', 'lora_alpha', 'attn_scale'):
            v = getattr(self, key)
            check((v is None and key == 'attn_scale') or (isinstance(v, (int, float)) and not isinstance(v, bool)
                  and math.isfinite(v) and v > 0), f"{key} must be a positive number, got {v!r}")
        for key in ('dropout', 'lora_dropout'):
            check(isinstance(getattr(self, key), (int, float)) and not isinstance(getattr(self, key), bool) and 0 <= getattr(self, key) < 1, f"{key} must be in [0, 1), got {getattr(self, key)!r}")
        check(self.n_kv_head is None or (isinstance(self.n_kv_head, int) and not isinstance(self.n_kv_head, bool) and self.n_kv_head > 0
              and self.n_head % self.n_kv_head == 0), f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        check(self.n_embd % self.n_head == 0, f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        check(self.pos != 'rope' or (self.n_embd // self.n_head) % 2 == 0,
              f"pos='rope' needs an even head size, but n_embd/n_head = {self.n_embd}/{self.n_head} = {self.n_embd // self.n_head}")
        check(self.norm in ('layernorm', 'rmsnorm'), f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")
        check(self.pos in ('learned', 'rope'), f"pos must be 'learned' or 'rope', got {self.pos!r}")
        check(self.rope_layout in ('half', 'interleaved'), f"rope_layout must be 'half' or 'interleaved', got {self.rope_layout!r}")
        check(self.mlp in ('gelu', 'gelu_tanh', 'swiglu'), f"mlp must be 'gelu', 'gelu_tanh' or 'swiglu', got {self.mlp!r}")
        check(self.adapter_layers in ('all', 'virtual'), f"adapter_layers must be 'all' or 'virtual', got {self.adapter_layers!r}")
        check(isinstance(self.lora_targets, (list, tuple)), f"lora_targets must be a list of {list(LORA_TARGETS)}, got {self.lora_targets!r}")
        bad = [t for t in self.lora_targets if t not in LORA_TARGETS]
        check(not bad, f"unknown lora_targets {bad}; valid: {list(LORA_TARGETS)}")
        check(isinstance(self.lora_rank, int) and not isinstance(self.lora_rank, bool) and self.lora_rank >= 0, f"lora_rank must be an int >= 0, got {self.lora_rank!r}")
        m = self.layer_map
        if m is not None:
            check(isinstance(m, (list, tuple)) and len(m) > 0, f"layer_map must be a non-empty list of block indices, got {m!r}")
            check(all(isinstance(i, int) and not isinstance(i, bool) for i in m), f"layer_map entries must be integers, got {m!r}")
            check(all(0 <= i < self.n_layer for i in m), f"layer_map {list(m)} indexes outside the {self.n_layer} physical blocks (0..{self.n_layer - 1})")
            self.layer_map = list(m)
        w = self.attn_window
        if isinstance(w, (list, tuple)):
            check(len(w) == self.n_logical, f"attn_window has {len(w)} entries but there are {self.n_logical} logical layers")
            check(all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in w), f"attn_window entries must be ints >= 0, got {w!r}")
            self.attn_window = list(w)
        else:
            check(w is None or (isinstance(w, int) and not isinstance(w, bool) and w >= 0),
                  f"attn_window must be None, an int >= 0 or a list, got {w!r}")

    @property
    def n_logical(self):
        return len(self.layer_map) if self.layer_map is not None else self.n_layer

    def physical_map(self):
        return self.layer_map if self.layer_map is not None else list(range(self.n_layer))

    def window(self, i):  # attention window of logical layer i (0 = global)
        w = self.attn_window
        return (w[i] if isinstance(w, list) else w) or 0

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}")
        return cls(**d)


def keys_where(reuse):
    return tuple(f.name for f in fields(GPTConfig) if f.metadata.get('reuse') in reuse)


ADAPTABLE_KEYS = keys_where(('adapt',))              # may be overridden when a model is built from a checkpoint
PER_SOURCE_KEYS = keys_where(('adapt', 'source'))    # may differ between the sources of one grown model


def resolve_ranks(spec, n_layer, n_in, n_out, n_split, what):
    """Turn a low-rank spec into one rank per physical block (0 = keep dense).
    'match' picks the rank whose factors hold about as many parameters as the dense matrix
    (the "large" rank of a low-rank-substituted model); 'inc:a:b' / 'dec:a:b' interpolate geometrically
    over depth."""
    if isinstance(spec, str):
        if spec == 'match':
            ranks = [round(n_out * n_in / (n_split * n_in + n_out))] * n_layer
        elif re.fullmatch(r'(inc|dec):\d+:\d+', spec):
            lo, hi = sorted(int(r) for r in spec.split(':')[1:])
            if lo < 1:
                raise ValueError(f"{what}={spec!r}: schedule ranks must be >= 1")
            ranks = [round(lo * (hi / lo) ** (i / max(n_layer - 1, 1))) for i in range(n_layer)]
            if spec.startswith('dec'):
                ranks.reverse()
        else:
            raise ValueError(f"{what}={spec!r}: use an int, a per-layer list, 'inc:a:b', 'dec:a:b' or 'match'")
    elif isinstance(spec, (list, tuple)):
        if len(spec) != n_layer:
            raise ValueError(f"{what} lists {len(spec)} ranks but the model has {n_layer} blocks")
        ranks = list(spec)
    else:
        ranks = [spec] * n_layer
    max_rank = min(n_in, n_out // n_split)
    for r in ranks:
        if not isinstance(r, int) or isinstance(r, bool) or r < 0 or r > max_rank:
            raise ValueError(f"{what}: rank {r!r} must be an int in 0..{max_rank}")
    return ranks

# -----------------------------------------------------------------------------
# building blocks


class Norm(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.kind, self.eps = config.norm, config.norm_eps
        self.weight = nn.Parameter(torch.ones(config.n_embd))
        self.bias = nn.Parameter(torch.zeros(config.n_embd)) if config.bias and self.kind == 'layernorm' else None

    def forward(self, x):
        if self.kind == 'rmsnorm':
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


def rope_tables(config):
    hd = config.n_embd // config.n_head
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
    angles = torch.outer(torch.arange(config.block_size).float(), inv_freq)  # (T, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin, layout):
    # x: (B, nh, T, hd); cos/sin: (T, hd/2). The two layouts pair different dimensions.
    if layout == 'interleaved':
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class LowRankLinear(nn.Module):
    """y = B (A x) + bias, with no dense weight at all. `splits` factor the output row groups
    separately (q, k and v each get their own rank-r A)."""
    def __init__(self, n_in, n_out, rank, bias, splits=None):
        super().__init__()
        self.splits, self.rank = splits or [n_out], rank
        self.A = nn.Parameter(torch.empty(len(self.splits) * rank, n_in))
        self.B = nn.Parameter(torch.empty(n_out, rank))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x):
        a = F.linear(x, self.A)
        if len(self.splits) == 1:
            return F.linear(a, self.B, self.bias)
        outs = [F.linear(ai, Bi) for ai, Bi in zip(a.split(self.rank, -1), self.B.split(self.splits, 0))]
        y = torch.cat(outs, dim=-1)
        return y if self.bias is None else y + self.bias

    def dense_weight(self):
        return torch.cat([Bi @ Ai for Ai, Bi in zip(self.A.split(self.rank, 0), self.B.split(self.splits, 0))])


def make_linear(n_in, n_out, bias, rank=0, splits=None):
    return LowRankLinear(n_in, n_out, rank, bias, splits) if rank else nn.Linear(n_in, n_out, bias=bias)


def dense_weight(linear):
    return linear.dense_weight() if isinstance(linear, LowRankLinear) else linear.weight


def lora_scale(alpha, rank):
    return alpha / rank


class LoRA(nn.Module):
    """Low-rank update scale * B A x ("LoRA: Low-Rank Adaptation of Large Language Models", 2021,
    arXiv 2106.09685; peft/litgpt semantics): A random, B zero, so an untrained adapter is exactly
    the identity."""
    def __init__(self, n_in, n_out, rank, alpha, dropout):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, n_in))
        self.lora_B = nn.Parameter(torch.empty(n_out, rank))
        self.scale = lora_scale(alpha, rank)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def forward(self, x):  # the scale goes on B (out x r), not on the output (tokens x out)
        return F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B * self.scale)

    def delta(self):
        return (self.lora_B @ self.lora_A) * self.scale


class Adapter(nn.Module):
    """The adapters of one logical layer (empty when that layer is not adapted): LoRA and IA3
    ("Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning", 2022,
    arXiv 2205.05638), both the identity until trained."""
    def __init__(self, config, active):
        super().__init__()
        d, hd = config.n_embd, config.n_embd // config.n_head
        kv, hidden = (config.n_kv_head or config.n_head) * hd, config.mlp_hidden or 4 * d
        shapes = {'qkv': (d, d + 2 * kv), 'attn_out': (d, d), 'mlp_in': (d, hidden), 'mlp_out': (hidden, d)}
        targets = list(config.lora_targets) if active and config.lora_rank else []
        if 'mlp_in' in targets and config.mlp == 'swiglu':
            targets.append('mlp_up')  # SwiGLU has two input projections; adapt both
            shapes['mlp_up'] = shapes['mlp_in']
        self.lora = nn.ModuleDict({t: LoRA(*shapes[t], config.lora_rank, config.lora_alpha, config.lora_dropout) for t in targets})
        on = active and config.ia3
        self.n_q = d
        self.ia3_k = nn.Parameter(torch.ones(kv)) if on else None
        self.ia3_v = nn.Parameter(torch.ones(kv)) if on else None
        self.ia3_ff = nn.Parameter(torch.ones(hidden)) if on else None

    def reset_parameters(self):
        for lora in self.lora.values():
            lora.reset_parameters()
        for p in (self.ia3_k, self.ia3_v, self.ia3_ff):
            if p is not None:
                nn.init.ones_(p)

    def scales(self, target):
        """IA3's scale vectors for a target's matrix: (output rows, input columns), None where none.
        Keys and values are rows of the fused qkv projection (queries keep scale 1); the MLP
        hidden activation is the input of mlp_out."""
        if self.ia3_k is None:
            return None, None
        if target == 'qkv':
            return torch.cat([self.ia3_k.new_ones(self.n_q), self.ia3_k, self.ia3_v]), None
        return None, (self.ia3_ff if target == 'mlp_out' else None)

    def fold(self, target, w, b):
        """The dense weight and bias equivalent to `target`'s matrix (w, b) with these adapters."""
        rows, cols = self.scales(target)
        if target in self.lora:
            w = w + self.lora[target].delta()
        if rows is not None:
            w, b = w * rows[:, None], (b * rows if b is not None else None)
        if cols is not None:
            w = w * cols
        return w, b

    def run(self, target, module, x):
        """module(x) with this logical layer's LoRA update and IA3 scales applied. When the base
        weight trains, its gradient costs a full matmul anyway, so the adapters are folded into the
        weight, W' = (W + s B A) * rows * cols: one matmul instead of three plus two elementwise
        scalings (bench.py adapters: LoRA overhead +39% -> +8%). Otherwise (frozen base, inference,
        LoRA dropout, low-rank factors) they run on the activations, which is cheaper there."""
        lora = self.lora[target] if target in self.lora else None
        rows, cols = self.scales(target)
        if lora is None and rows is None and cols is None:
            return module(x)
        dropout = lora is not None and isinstance(lora.dropout, nn.Dropout) and self.training
        if isinstance(module, nn.Linear) and module.weight.requires_grad and torch.is_grad_enabled() and not dropout:
            return F.linear(x, *self.fold(target, module.weight, module.bias))
        if cols is not None:
            x = x * cols
        y = module(x)
        if lora is not None:
            y = y + lora(x)
        return y if rows is None else y * rows


class CausalSelfAttention(nn.Module):
    def __init__(self, config, rank_qkv=0, rank_out=0):
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head or config.n_head
        self.head_dim = config.n_embd // config.n_head
        q, kv = config.n_embd, self.n_kv_head * self.head_dim
        self.splits = [q, kv, kv]
        qkv_bias = config.bias if config.qkv_bias is None else config.qkv_bias
        self.c_attn = make_linear(config.n_embd, q + 2 * kv, qkv_bias, rank_qkv, self.splits)
        self.c_proj = make_linear(q, config.n_embd, config.bias, rank_out)
        self.attn_dropout, self.resid_dropout = config.dropout, nn.Dropout(config.dropout)
        self.scale, self.rope_layout = config.attn_scale, config.rope_layout

    def forward(self, x, adapter, window, rope, cache):
        B, T, C = x.size()
        q, k, v = adapter.run('qkv', self.c_attn, x).split(self.splits, dim=2)  # IA3 rescales k and v in there
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        offset = 0
        if cache is not None:  # this logical layer's own slot: tied blocks must not share one
            offset = cache[0].size(2) if cache[0] is not None else 0
        if rope is not None:
            cos, sin = rope[0][offset:offset + T], rope[1][offset:offset + T]
            q, k = apply_rope(q, cos, sin, self.rope_layout), apply_rope(k, cos, sin, self.rope_layout)
        if cache is not None:
            if cache[0] is not None:
                k, v = torch.cat((cache[0], k), dim=2), torch.cat((cache[1], v), dim=2)
            cache[0], cache[1] = k, v
        if self.n_kv_head != self.n_head:  # (SDPA's enable_gqa skips the copies, but rounds the kv gradients otherwise)
            rep = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        S = k.size(2)
        # an explicit mask (attention windows, decoding after a cached prefix) rules out the flash kernel on a GPU:
        # SDPA then runs the memory-efficient or the math kernel; plain causal training keeps flash
        mask, causal = None, offset == 0 and not window
        if not causal and (T > 1 or (window and S > window)):
            i = torch.arange(offset, offset + T, device=x.device)[:, None]
            j = torch.arange(S, device=x.device)[None, :]
            mask = j <= i
            if window:
                mask = mask & (i - j < window)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and T > 1,
                                           dropout_p=self.attn_dropout if self.training else 0.0, scale=self.scale)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)
        return self.resid_dropout(adapter.run('attn_out', self.c_proj, y))


class MLP(nn.Module):
    def __init__(self, config, rank_in=0, rank_out=0):
        super().__init__()
        hidden, d = config.mlp_hidden or 4 * config.n_embd, config.n_embd
        self.kind = config.mlp
        self.c_fc = make_linear(d, hidden, config.bias, rank_in)
        self.c_up = make_linear(d, hidden, config.bias, rank_in) if self.kind == 'swiglu' else None
        self.c_proj = make_linear(hidden, d, config.bias, rank_out)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, adapter):
        h = adapter.run('mlp_in', self.c_fc, x)
        if self.kind == 'swiglu':
            h = F.silu(h) * adapter.run('mlp_up', self.c_up, x)
        else:
            h = F.gelu(h, approximate='tanh' if self.kind == 'gelu_tanh' else 'none')
        return self.dropout(adapter.run('mlp_out', self.c_proj, h))  # IA3 rescales h in there


class Block(nn.Module):
    def __init__(self, config, ranks):
        super().__init__()
        self.ln_1 = Norm(config)
        self.attn = CausalSelfAttention(config, ranks['attn'], ranks['attn'])
        self.ln_2 = Norm(config)
        self.mlp = MLP(config, ranks['mlp'], ranks['mlp'])

    def forward(self, x, adapter, window, rope, cache):
        x = x + self.attn(self.ln_1(x), adapter, window, rope, cache)
        return x + self.mlp(self.ln_2(x), adapter)

# -----------------------------------------------------------------------------


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        d, hidden = config.n_embd, config.mlp_hidden or 4 * config.n_embd
        kv = (config.n_kv_head or config.n_head) * (d // config.n_head)
        attn_ranks = resolve_ranks(config.lowrank_attn, config.n_layer, d, d + 2 * kv, 3, 'lowrank_attn')
        mlp_ranks = resolve_ranks(config.lowrank_mlp, config.n_layer, d, hidden, 1, 'lowrank_mlp')
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, d),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, {'attn': a, 'mlp': m}) for a, m in zip(attn_ranks, mlp_ranks)]),
            ln_f=Norm(config),
        ))
        if config.pos == 'learned':
            self.transformer.wpe = nn.Embedding(config.block_size, d)
        else:
            cos, sin = rope_tables(config)
            self.register_buffer('rope_cos', cos, persistent=False)
            self.register_buffer('rope_sin', sin, persistent=False)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight  # https://paperswithcode.com/method/weight-tying

        # init all weights; residual output projections scaled down by depth (GPT-2 paper)
        self.apply(self._init_weights)
        depth_scale = math.sqrt(2 * config.n_logical)
        for pn, p in self.named_parameters():
            if pn.endswith('c_proj.weight'):
                nn.init.normal_(p, mean=0.0, std=0.02 / depth_scale)
            elif pn.endswith('c_proj.B'):
                nn.init.normal_(p, mean=0.0, std=p.size(1) ** -0.5 / depth_scale)

        # adapters belong to logical layers, created after init so it does not touch them
        seen, active = set(), []
        for p in config.physical_map():
            active.append(config.adapter_layers == 'all' or p in seen)
            seen.add(p)
        has_adapters = config.lora_rank > 0 or config.ia3
        self.adapters = nn.ModuleList([Adapter(config, a and has_adapters) for a in active])
        self.activation_checkpointing = False  # a training choice, not the model's: see set_activation_checkpointing

    def finish_meta_build(self):
        """Complete a model built on the meta device whose weights came in through
        load_state_dict(assign=True) (checkpoint.build_model: no time spent on an init that is
        overwritten): tie the head to the embedding again, compute the rotary tables, and give the
        parameters the checkpoint did not hold (adapters added to it) their identity init."""
        device = self.lm_head.weight.device
        if self.config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight
        if self.config.pos == 'rope':
            self.rope_cos, self.rope_sin = (t.to(device) for t in rope_tables(self.config))
        for adapter in self.adapters:
            if any(p.is_meta for p in adapter.parameters()):
                adapter.to_empty(device=device)
                adapter.reset_parameters()
        return self

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, LowRankLinear):
            # B A then has about the 0.02 entry std of a dense init
            nn.init.normal_(module.A, mean=0.0, std=0.02)
            nn.init.normal_(module.B, mean=0.0, std=module.rank ** -0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, kv_cache=None):
        """kv_cache: a list with one [k, v] slot per logical layer (see new_kv_cache)."""
        B, T = idx.size()
        offset = 0 if kv_cache is None or kv_cache[0][0] is None else kv_cache[0][0].size(2)
        assert offset + T <= self.config.block_size, f"sequence of {offset + T} exceeds block_size {self.config.block_size}"
        x = self.transformer.wte(idx)
        if self.config.pos == 'learned':
            x = x + self.transformer.wpe(torch.arange(offset, offset + T, device=idx.device))
        x = self.transformer.drop(x)
        rope = (self.rope_cos, self.rope_sin) if self.config.pos == 'rope' else None
        for i, p in enumerate(self.config.physical_map()):
            cache = kv_cache[i] if kv_cache is not None else None
            args = (x, self.adapters[i], self.config.window(i), rope, cache)
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(self.transformer.h[p], *args, use_reentrant=False)  # same RNG draws on recompute
            else:
                x = self.transformer.h[p](*args)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def set_activation_checkpointing(self, enabled=True):
        """Keep only each logical layer's input in training and recompute the layer in backward:
        activation memory of one layer instead of all, for about one more forward pass of compute
        ("Training Deep Nets with Sublinear Memory Cost", 2016, arXiv:1604.06174)."""
        self.activation_checkpointing = enabled

    def new_kv_cache(self):
        return [[None, None] for _ in range(self.config.n_logical)]

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, use_cache=True):
        """Sample max_new_tokens after idx (B, T); temperature 0 is greedy. With the cache each
        step runs one token; when the window is full we re-run the cropped context."""
        bs, cache = self.config.block_size, None
        with torch.inference_mode():  # no autograd bookkeeping at all: a cached step is ~150 tiny ops
            for _ in range(max_new_tokens):
                if not use_cache:
                    logits, _ = self(idx[:, -bs:])
                elif cache is None or cache[0][0].size(2) + 1 > bs:
                    cache = self.new_kv_cache()
                    logits, _ = self(idx[:, -bs:], kv_cache=cache)
                else:
                    logits, _ = self(idx[:, -1:], kv_cache=cache)
                logits = logits[:, -1, :].float()
                if temperature == 0:
                    idx_next = logits.argmax(dim=-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                        logits[logits < v[:, [-1]]] = -float('Inf')
                    idx_next = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
                idx = torch.cat((idx, idx_next), dim=1)
        return idx.clone()  # an ordinary tensor again: inference tensors cannot be saved for backward

    def crop_block_size(self, block_size):
        # model surgery to use a smaller context than the checkpoint was trained with
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        if self.config.pos == 'learned':
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])
        else:
            self.rope_cos, self.rope_sin = self.rope_cos[:block_size], self.rope_sin[:block_size]

    @torch.no_grad()
    def merged(self):
        """An equivalent plain model: tied layers copied out, LoRA merged, IA3 folded into the
        weights, low-rank factors multiplied out. Used by export and as a correctness check."""
        c = self.config
        plain = GPTConfig(**{**c.to_dict(), 'n_layer': c.n_logical, 'layer_map': None, 'lora_rank': 0,
                             'ia3': False, 'lowrank_attn': 0, 'lowrank_mlp': 0})
        out = GPT(plain).to(self.lm_head.weight.device)
        sd = {k: v for k, v in self.state_dict().items() if not k.startswith(('transformer.h.', 'adapters.'))}
        for i, p in enumerate(c.physical_map()):
            blk, ad = self.transformer.h[p], self.adapters[i]
            modules = {'attn.c_attn': 'qkv', 'attn.c_proj': 'attn_out', 'mlp.c_fc': 'mlp_in', 'mlp.c_proj': 'mlp_out'}
            if blk.mlp.c_up is not None:
                modules['mlp.c_up'] = 'mlp_up'
            for name, target in modules.items():
                m = blk.get_submodule(name)
                w, b = ad.fold(target, dense_weight(m), m.bias)
                sd[f'transformer.h.{i}.{name}.weight'] = w
                if b is not None:
                    sd[f'transformer.h.{i}.{name}.bias'] = b
            for name, t in blk.state_dict().items():
                if name.startswith(('ln_1', 'ln_2')):
                    sd[f'transformer.h.{i}.{name}'] = t
        out.load_state_dict(sd)
        return out

    # -------------------------------------------------------------------------
    # training helpers: freezing, optimizer, accounting

    def set_trainable(self, spec='all', new_blocks=()):
        """Which parameters train: 'all' | 'adapters' | 'new' (blocks a grow step added) | a regex."""
        if spec == 'all':
            pick = lambda n: True
        elif spec == 'adapters':
            if not any(n.startswith('adapters.') for n, _ in self.named_parameters()):
                raise ValueError("train_only='adapters' but the model has no adapters (set lora_rank or ia3)")
            pick = lambda n: n.startswith('adapters.')
        elif spec == 'new':
            if not new_blocks:
                raise ValueError("train_only='new' needs a grown checkpoint that records new blocks (grow.py provenance)")
            prefixes = tuple(f'transformer.h.{p}.' for p in new_blocks)
            pick = lambda n: n.startswith(prefixes)
        else:
            try:
                rx = re.compile(spec)
            except re.error as e:
                raise ValueError(f"train_only={spec!r} is not 'all', 'adapters', 'new' or a valid regex ({e})")
            pick = lambda n: rx.search(n) is not None
        names = [n for n, _ in self.named_parameters()]
        if not any(pick(n) for n in names):
            raise ValueError(f"train_only={spec!r} selects no parameters")
        for n, p in self.named_parameters():
            p.requires_grad_(pick(n))

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        # only trainable params; 2D+ tensors (matmuls, embeddings, LoRA factors) decay, the rest do not
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]
        # the fused kernel: one pass over all tensors (CUDA; on CPU bench.py measured it faster, same loss)
        extra = dict(fused=True) if device_type in ('cuda', 'cpu') else {}
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def param_counts(self):
        """unique: stored once; logical: as if every logical layer had its own copy (tied blocks
        counted each time they run); trainable: what the optimizer updates."""
        def numel(m):
            return sum(p.numel() for p in m.parameters())
        unique = numel(self)
        blocks = [numel(b) for b in self.transformer.h]
        logical = unique - sum(blocks) + sum(blocks[p] for p in self.config.physical_map())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        # embeddings that are lookups, not matmuls: wpe, and wte when it is not also the head
        emb = self.transformer.wpe.weight.numel() if self.config.pos == 'learned' else 0
        if not self.config.tie_embeddings:
            emb += self.transformer.wte.weight.numel()
        return dict(unique=unique, logical=logical, trainable=trainable,
                    unique_non_embedding=unique - emb, logical_non_embedding=logical - emb)

    def sampling_memory(self, bytes_per_value=4):
        """Bytes a batch-1 sampler holds at a full context: the weights as stored (a tied block once)
        with the buffers, and generate's KV cache, one K and V per LOGICAL layer (two runs of a tied
        block see different inputs). Counted, not measured: at small sizes the process's own memory
        (torch alone is hundreds of MB) hides differences of a few MB."""
        c = self.config
        weights = sum(t.numel() for t in [*self.parameters(), *self.buffers()]) * bytes_per_value
        kv_cache = c.n_logical * 2 * (c.n_kv_head or c.n_head) * (c.n_embd // c.n_head) * c.block_size * bytes_per_value
        return dict(weights=weights, kv_cache=kv_cache)

    def flops_per_token(self):
        """Training FLOPs per token (forward + backward) on the LOGICAL depth: a tied layer costs
        compute every time it runs. 6N for the matmuls plus the attention score/value term
        (PaLM appendix B), with local layers attending to at most their window."""
        c = self.config
        n = self.param_counts()['logical_non_embedding']
        head_dim, T = c.n_embd // c.n_head, c.block_size
        attn = sum(12 * c.n_head * head_dim * min(T, c.window(i) or T) for i in range(c.n_logical))
        return 6 * n + attn

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops):
        """Model FLOPs utilization: achieved FLOP/s over the peak (pass your hardware's; bench.py measures one)."""
        return self.flops_per_token() * tokens_per_iter / dt / peak_flops
