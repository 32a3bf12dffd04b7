"""
Grow a GPT: read one or several checkpoints, write a bigger (or weight-shared) one in the same format,
so train.py (init_from=path), sample.py and eval.py use it like any other checkpoint.

$ python grow.py --method stack --out out/grown.pt out/small/last.pt            # G_stack x2: 0..L-1,0..L-1
$ python grow.py --method llama_pro --every 2 --out out/pro.pt a.pt              # exact identity blocks
$ python grow.py --method map --map "a:0-5,b:3-7" --out out/fm.pt a.pt b.pt       # frankenmerge
$ python grow.py --method map --yaml slices.yml --out out/fm.pt                   # mergekit passthrough
$ python grow.py --method width --factor 2 --out out/wide.pt a.pt                 # Net2Net, exact
$ python grow.py --method width --init zero --n_embd 192 --out out/wide.pt a.pt   # G_zero in width, exact
$ python grow.py --method ligo --n_layer 8 --data data/x --device cuda --dtype bfloat16 --out out/ligo.pt a.pt

Library: grow(sources, method, **options) -> checkpoint dict (sources are loaded checkpoint dicts);
check_options(method, options) and check_growth_schedule(steps) (train.py's) validate methods and
options before any work is done.

Read top to bottom:
1) sources: every source is first made plain (tied layers, adapters and low-rank factors multiplied
   out: model.merged()) and split into per-layer tensor dicts;
2) depth: pure layer orders (stack_order, interleave_order, dus_order; eval.py sweeps them too), a
   plan of Slots (one per logical layer) per method, and place(), which turns a plan into blocks,
   with duplicates copied or, with tied=True, weight-tied through layer_map (LESA's predictor is in
   lesa.py);
3) width (net2net copies, zero, random) and weight sharing (tie);
4) METHODS, the one registry: each method's function, the options it takes, how many sources, and
   whether it needs training data; grow() dispatches through it and writes the provenance;
5) the command line.
Every method returns a Grown. The grown checkpoint records where every logical layer came from in
`provenance`, and which physical blocks are new (train.py train_only='new' trains only those: the
LLaMA Pro recipe).
"""
import hashlib
import math
import os
import re
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from checkpoint import load_any, make_checkpoint, save_checkpoint, strip_prefixes
from configurator import ArgumentParser, check_out_path
from device import choose
from lesa import lesa_layers, svd
from model import GPT, GPTConfig, Adapter, LoRA, LORA_TARGETS, PER_SOURCE_KEYS, lora_scale
from tokenizer import check_same_tokenizer
from tokens import TokenData

LETTERS = 'abcdefghijklmnopqrstuvwxyz'

class Slot(NamedTuple):
    """One logical layer of a depth plan."""
    at: tuple      # (source, layer) it copies or sits beside
    tensors: dict  # its block's tensors, {suffix: tensor} (suffix as in transformer.h.<i>.<suffix>)
    origin: str    # for the provenance: 'a:3', 'zero(a:3)', 'new', ...
    copy: bool     # an unmodified copy of `at`: may be weight-tied, gets noise when duplicated


@dataclass
class Grown:
    """What every method returns; grow() turns it into a checkpoint."""
    blocks: list   # physical blocks, each {suffix: tensor}
    layers: list   # per logical layer: dict(origin, new, block)
    args: dict     # model_args that differ from the head source's
    new_blocks: list = field(default_factory=list)  # physical blocks that did not exist before
    rest: dict = None   # embeddings, final norm and head, when the method makes its own (width, YAML)
    adapters: dict = field(default_factory=dict)    # 'adapters.<l>.…' tensors
    info: dict = field(default_factory=dict)        # more provenance (LESA's fit, untied head, ...)

# -----------------------------------------------------------------------------
# sources: plain state dicts split into per-layer dicts


@dataclass
class Source:
    letter: str    # a, b, c, ... by position
    name: str      # the name it was given (NAME=PATH, YAML model), else its letter
    args: dict     # model_args of the plain model
    layers: list   # per layer {suffix: tensor}
    rest: dict     # everything outside transformer.h
    cfg: GPTConfig

    def state_dict(self):
        return {**self.rest, **{f'transformer.h.{i}.{k}': v for i, layer in enumerate(self.layers) for k, v in layer.items()}}


def plain_source(ckpt, letter, name=None):
    """A checkpoint as a Source, its tensors those of the equivalent plain model."""
    args, sd = dict(ckpt['model_args']), strip_prefixes(ckpt['model'])
    try:
        cfg = GPTConfig.from_dict(args)
    except (TypeError, ValueError) as e:
        raise ValueError(f"source {letter}: bad model_args ({e})") from None
    if cfg.layer_map is not None or cfg.lora_rank or cfg.ia3 or cfg.lowrank_attn or cfg.lowrank_mlp:
        model = GPT(cfg)
        try:
            model.load_state_dict(sd)
        except RuntimeError:
            raise ValueError(f"source {letter}: weights do not match its model_args") from None
        model = model.merged()  # copies out tied layers, merges LoRA/IA3, multiplies out factors
        args, sd = model.config.to_dict(), model.state_dict()
    try:
        layers, rest = split_layers(sd, args['n_layer'])
    except ValueError as e:
        raise ValueError(f"source {letter}: weights do not match its model_args ({e})") from None
    # names and shapes must be those of the model the args describe
    with torch.device('meta'):
        one_block = GPT(GPTConfig.from_dict({**args, 'n_layer': 1, 'attn_window': None}))
    want = {k: tuple(v.shape) for k, v in one_block.state_dict().items()}
    block = {k[len('transformer.h.0.'):]: v for k, v in want.items() if k.startswith('transformer.h.0.')}
    other = {k: v for k, v in want.items() if not k.startswith('transformer.h.')}
    for prefix, have, expect in [('', rest, other)] + [(f'transformer.h.{i}.', l, block) for i, l in enumerate(layers)]:
        for k in sorted(set(expect) | set(have)):
            if k not in have or k not in expect or tuple(have[k].shape) != expect[k]:
                what = 'missing' if k not in have else 'unexpected' if k not in expect else f'shape {tuple(have[k].shape)} for'
                raise ValueError(f"source {letter}: weights do not match its model_args ({what} {prefix}{k})")
    return Source(letter, name if name is not None else letter, args, layers, rest, GPTConfig.from_dict(args))


def split_layers(sd, n_layer):
    """A full state dict -> ([{suffix: tensor} per block], {other key: tensor})."""
    layers, rest = [{} for _ in range(n_layer)], {}
    for k, v in sd.items():
        m = re.match(r'transformer\.h\.(\d+)\.(.+)', k)
        if m and int(m.group(1)) >= n_layer:
            raise ValueError(f"unexpected {k}")
        (layers[int(m.group(1))] if m else rest)[m.group(2) if m else k] = v
    return layers, rest


def source_index(src, name):
    """A source by its letter (a, b, ...), its given name, or its position."""
    if isinstance(name, int) and 0 <= name < len(src):
        return name
    for j, s in enumerate(src):
        if name in (s.letter, s.name):
            return j
    known = ', '.join(s.letter + (f"={s.name}" if s.name != s.letter else '') for s in src)
    raise ValueError(f"unknown source {name!r} (sources: {known})")


def check_same_architecture(src):
    a = src[0].args
    for s in src[1:]:
        for k in a:
            if k not in PER_SOURCE_KEYS and s.args.get(k) != a[k]:
                raise ValueError(f"sources differ in {k}: {src[0].letter}={a[k]!r}, {s.letter}={s.args.get(k)!r}")


def layer_index(s, i):
    if not isinstance(i, int) or not 0 <= i < len(s.layers):
        raise ValueError(f"layer {i} out of range for source {s.letter} ({len(s.layers)} layers: 0..{len(s.layers) - 1})")
    return i


def check_noise(noise):
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < math.inf:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")


def jitter(t, noise):
    """A copy of t; weight matrices get Gaussian noise of `noise` times their own std (symmetry breaking)."""
    if noise and t.dim() >= 2:
        return t + noise * t.float().std().to(t.dtype) * torch.randn_like(t)
    return t.clone()


# -----------------------------------------------------------------------------
# depth orders: pure functions of the sources' depths -> [(source, layer)] per logical layer.
# `depths` lists each source's number of layers (an int for one source).


def _depths(depths):
    return [depths] if isinstance(depths, int) else list(depths)


def stack_order(depths, factor=None, n_layer=None):
    """G_stack: the whole model (with several sources: a's layers then b's ...) repeated `factor`
    times (default 2 for one source, 1 for several), or up to n_layer layers (the last repeat truncated)."""
    unit = [(s, i) for s, n in enumerate(_depths(depths)) for i in range(n)]
    if factor is not None and n_layer is not None:
        raise ValueError("stack: give factor or n_layer, not both")
    n = n_layer if n_layer is not None else len(unit) * (factor if factor is not None else 2 if len(_depths(depths)) == 1 else 1)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"stack: target depth must be a positive integer, got {n!r}")
    return [unit[j % len(unit)] for j in range(n)]


def interleave_order(depths, factor=None, every=1, n_layer=None):
    """Each layer repeated in place (0,0,1,1,...); with several sources alternate them (a0,b0,a1,b1,...).
    every=k: only every k-th layer (i+1 divisible by k) is repeated / alternated. n_layer (one
    source): any target depth, the repeats spread evenly (layer i*L//n_layer at position i)."""
    depths = _depths(depths)
    L = depths[0]
    if any(n != L for n in depths):
        raise ValueError(f"interleave: sources differ in n_layer ({', '.join(map(str, depths))})")
    if n_layer is not None:
        if factor is not None or every != 1 or len(depths) > 1:
            raise ValueError("interleave: n_layer takes one source and neither factor nor every")
        if not isinstance(n_layer, int) or n_layer < L:
            raise ValueError(f"interleave: n_layer={n_layer!r} must be an integer >= {L}")
        return [(0, i * L // n_layer) for i in range(n_layer)]
    factor = factor if factor is not None else 2 if len(depths) == 1 else 1
    if not isinstance(factor, int) or factor < 1 or not isinstance(every, int) or every < 1:
        raise ValueError(f"interleave: factor and every must be positive integers, got {factor!r}, {every!r}")
    order = []
    for i in range(L):
        picked = (i + 1) % every == 0
        for _ in range(factor if picked else 1):
            order += [(s, i) for s in (range(len(depths)) if picked else [0])]
    return order


def dus_order(depths, m=None, n_layer=None):
    """SOLAR depth up-scaling: layers[:n-m] + layers[m:n] (s = 2(n-m)); any target s as in prts:
    layers[:n-m] + layers[m:m+(s-n)] + layers[n-m:]. With two sources the second part is b's."""
    depths = _depths(depths)
    if len(depths) > 2:
        raise ValueError(f"dus takes one or two sources, got {len(depths)}")
    a, b = 0, len(depths) - 1
    n = depths[a]
    if depths[b] != n:
        raise ValueError(f"dus: sources differ in n_layer ({n}, {depths[b]})")
    m = m if m is not None else max(n // 4, 1)
    s = n_layer if n_layer is not None else 2 * (n - m)
    if not (isinstance(m, int) and 0 < m < n) or not (isinstance(s, int) and n < s <= 2 * n - m):
        raise ValueError(f"dus: need 0 < m < n and n < n_layer <= 2n-m (n={n}, m={m!r}, n_layer={s!r})")
    return [(a, i) for i in range(n - m)] + [(b, i) for i in range(m, m + s - n)] + [(b, i) for i in range(n - m, n)]


def insert_points(L, every, n_layer, method):
    """After which layers new blocks go: after every k-th layer (LLaMA Pro: 32 -> 40 is k = 4)."""
    if every is not None and n_layer is not None:
        raise ValueError(f"{method}: give every or n_layer, not both")
    if n_layer is not None:
        if not isinstance(n_layer, int) or n_layer <= L or L % (n_layer - L):
            raise ValueError(f"{method}: n_layer={n_layer!r} must be > {L} with {L} divisible by the number of new layers")
        every = L // (n_layer - L)
    every = 1 if every is None else every
    if not isinstance(every, int) or not 1 <= every <= L:
        raise ValueError(f"{method}: every={every!r} must be an integer in 1..{L}")
    return [i for i in range(L) if (i + 1) % every == 0]

# -----------------------------------------------------------------------------
# depth methods: each builds a plan (a Slot per logical layer) and place()s it


def place(src, plan, noise=0.0, tied=False, lora_rank=0, lora_alpha=16.0, ia3=False, adapter_layers='all'):
    """Blocks from a plan. A slot whose source layer came before (a duplicate, or a block inserted
    beside it) is new; duplicates are copied (with `noise`) or, tied, run the first occurrence's block
    (a virtual layer), optionally with a LoRA / IA3 per logical layer that starts as the identity."""
    check_noise(noise)
    if noise and tied:
        raise ValueError("noise does not apply with tied=True (duplicates share their weights)")
    if adapter_layers not in ('all', 'virtual'):
        raise ValueError(f"adapter_layers must be 'all' or 'virtual', got {adapter_layers!r}")
    if adapter_layers == 'virtual' and not tied:
        raise ValueError("adapter_layers='virtual' needs tied=True (only repeated blocks get adapters)")
    blocks, layer_map, layers, new_blocks, seen, tied_to = [], [], [], [], set(), {}
    for slot in plan:
        new = slot.at in seen
        seen.add(slot.at)
        if tied and slot.copy and slot.at in tied_to:
            p = tied_to[slot.at]  # a virtual layer: runs the block of the first occurrence
        else:
            p = len(blocks)
            blocks.append({k: jitter(v, noise) for k, v in slot.tensors.items()} if new and slot.copy else slot.tensors)
            if slot.copy:
                tied_to.setdefault(slot.at, p)
            if new:
                new_blocks.append(p)
        layer_map.append(p)
        layers.append(dict(origin=slot.origin, new=new, block=p))
    windows = [src[s].cfg.window(i) for (s, i), *_ in plan]
    args = dict(n_layer=len(blocks), layer_map=layer_map if layer_map != list(range(len(blocks))) else None,
                attn_window=windows if len(set(windows)) > 1 else windows[0] or None,
                lora_rank=lora_rank or 0, lora_alpha=lora_alpha, ia3=bool(ia3), adapter_layers=adapter_layers,
                lora_targets=list(LORA_TARGETS))
    adapters = {}
    if lora_rank or ia3:  # per-occurrence adapters start as the identity (LoRA B = 0, IA3 = 1)
        cfg = GPTConfig.from_dict({**src[0].args, **args})
        repeated = set()
        for j, p in enumerate(layer_map):
            active = adapter_layers == 'all' or p in repeated
            repeated.add(p)
            adapters.update({f'adapters.{j}.{k}': v for k, v in Adapter(cfg, active).state_dict().items()})
    return Grown(blocks=blocks, layers=layers, args=args, new_blocks=new_blocks, adapters=adapters)


def midas_order(depths, block=1):
    """One stage of MIDAS, gradual middle stacking ("On the Inductive Bias of Stacking Towards Improving Reasoning",
    Saunshi et al., NeurIPS 2024, arXiv 2409.19044): the middle `block` consecutive layers duplicated in place,
    L -> L + block layers (0,1,1,2 from 3 layers; 0,1,2,1,2,3 from 4 with block=2). Several stages are several growth
    steps (train.py's grow_steps)."""
    depths = _depths(depths)
    if len(depths) > 1:
        raise ValueError("midas: one source (it grows a model by its own middle block)")
    L = depths[0]
    if not isinstance(block, int) or not 1 <= block <= L:
        raise ValueError(f"midas: block must be an integer in 1..{L} (the source's layers), got {block!r}")
    start = (L - block + 1) // 2  # the block centred in the model (the later one of two equally central)
    middle = list(range(start, start + block))
    return [(0, i) for i in range(start + block)] + [(0, i) for i in middle] + [(0, i) for i in range(start + block, L)]


def copies(src, order):
    """A plan of unmodified copies of the source layers an order names."""
    return [Slot((s, i), src[s].layers[i], f"{src[s].letter}:{i}", True) for s, i in order]


def stack(src, factor=None, n_layer=None, **duplicates):
    check_same_architecture(src)
    return place(src, copies(src, stack_order([len(s.layers) for s in src], factor, n_layer)), **duplicates)


def interleave(src, factor=None, every=1, n_layer=None, **duplicates):
    check_same_architecture(src)
    return place(src, copies(src, interleave_order([len(s.layers) for s in src], factor, every, n_layer)), **duplicates)


def midas(src, block=1, **duplicates):
    return place(src, copies(src, midas_order([len(s.layers) for s in src], block)), **duplicates)


def dus(src, m=None, n_layer=None, **duplicates):
    check_same_architecture(src)
    return place(src, copies(src, dus_order([len(s.layers) for s in src], m, n_layer)), **duplicates)


def parse_layers(text, src):
    """map's layer list: 'a:0,b:0,a:1-2,3' -> [(source, layer)]; i-j is inclusive; a bare index
    means the first source."""
    out = []
    for tok in str(text).split(','):
        name, _, idx = tok.strip().rpartition(':')
        m = re.fullmatch(r'(\d+)(?:-(\d+))?', idx.strip())
        if not m:
            raise ValueError(f"bad map entry {tok.strip()!r}: use i, name:i or name:i-j (inclusive)")
        j = source_index(src, name.strip()) if name else 0
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"map entry {tok.strip()!r}: empty range {lo}-{hi} (ranges are inclusive, lo <= hi)")
        out += [(j, layer_index(src[j], i)) for i in range(lo, hi + 1)]
    return out


def read_slices(text):
    """A mergekit passthrough config -> [(model, layer, t, scopes)] per output layer: layer_range is
    half-open; t is the layer's position in its slice (0..1, 1 for a one-layer slice), where mergekit
    reads gradients; scopes are the `parameters:` that apply, most specific first (the slice's source,
    the slice, the whole file), as mergekit resolves them."""
    import yaml  # optional dependency (pyyaml), only for --yaml
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"bad YAML: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get('slices'), list) or not cfg['slices']:
        raise ValueError("bad YAML: need a non-empty top-level 'slices:' list (mergekit passthrough format)")
    if cfg.get('merge_method', 'passthrough') != 'passthrough':
        raise ValueError(f"bad YAML: merge_method {cfg['merge_method']!r} is not supported (only passthrough)")
    out = []
    for n, sl in enumerate(cfg['slices']):
        srcs = sl.get('sources') if isinstance(sl, dict) else None
        if not isinstance(srcs, list) or len(srcs) != 1 or not isinstance(srcs[0], dict):
            raise ValueError(f"bad YAML: slice {n} needs exactly one entry under 'sources' (passthrough)")
        s = srcs[0]
        r = s.get('layer_range')
        if 'model' not in s or not (isinstance(r, list) and len(r) == 2 and all(type(x) is int for x in r) and 0 <= r[0] < r[1]):
            raise ValueError(f"bad YAML: slice {n} needs 'model' and 'layer_range: [start, end]' with 0 <= start < end")
        scopes = [x.get('parameters') or {} for x in (s, sl, cfg)]
        if not all(isinstance(p, dict) for p in scopes):
            raise ValueError(f"bad YAML: slice {n}: 'parameters' must be a mapping")
        size = r[1] - r[0]
        out += [(str(s['model']), i, j / (size - 1) if size > 1 else 1.0, scopes) for j, i in enumerate(range(*r))]
    return out


def number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def setting_value(setting, name, t):
    """mergekit's value of one parameter setting for tensor `name` (None: the setting says nothing): a
    number; a gradient (list of numbers, linearly interpolated at t); {filter, value} or a list of them,
    where the first entry without a filter, with filter '*' or with a filter contained in `name` wins."""
    if isinstance(setting, dict):
        setting = [setting]
    if number(setting):
        return float(setting)
    if isinstance(setting, list) and all(number(v) for v in setting):
        if not setting:
            return None
        pos = t * (len(setting) - 1)
        lo = int(pos)
        hi = min(len(setting) - 1, lo + 1)
        return (1 - (pos - lo)) * setting[lo] + (pos - lo) * setting[hi]
    if isinstance(setting, list) and all(isinstance(c, dict) and 'value' in c and set(c) <= {'filter', 'value'}
                                         and isinstance(c.get('filter', ''), str) for c in setting):
        for c in setting:
            if c.get('filter') in (None, '*') or c['filter'] in name:
                return setting_value(c['value'], name, t)
        return None
    raise ValueError(f"bad YAML: scale {setting!r} must be a number, a list of numbers or {{filter, value}} entries")


def mergekit_names(cfg):
    """Our tensor names -> [(mergekit's tensor name, rows)], the names its `filter`s are matched
    against: those of the Hugging Face family that runs the model (convert.py), c_attn being three
    tensors q, k, v; a model no family runs keeps our names."""
    from convert import name_map, pick_family
    try:
        family = pick_family(cfg)
    except ValueError:
        return None
    q, kv = cfg.n_embd, (cfg.n_kv_head or cfg.n_head) * (cfg.n_embd // cfg.n_head)
    names = {}
    for ours, theirs, how in name_map(family, cfg.n_layer):
        bounds = [0, q, q + kv, q + 2 * kv] if how == 'qkv' else [0, None]
        names[ours] = [(h, slice(bounds[j], bounds[j + 1])) for j, h in enumerate(theirs)]
    return names


def scaled(tensors, prefix, names, scopes, t):
    """mergekit passthrough's `scale` on one layer's (or the embeddings' / head's) tensors: each HF
    tensor times the value its most specific scope gives it, unscaled where none does. -> (tensors,
    the scales used); tensors that change are new copies."""
    out, used = dict(tensors), set()
    for key, v in tensors.items():
        full = prefix + key
        if names is not None and full not in names:
            raise ValueError(f"map: {full} has no Hugging Face name, so mergekit's scale cannot be matched for it")
        for name, rows in names[full] if names is not None else [(full, slice(None))]:
            x = next((x for p in scopes if 'scale' in p for x in [setting_value(p['scale'], name, t)] if x is not None), None)
            if x is not None and x != 1.0:  # x 1 is the tensor itself: the layer stays a plain (tieable) copy
                used.add(x)
                if out[key] is v:
                    out[key] = v.clone()
                out[key][rows] *= x
    return out, used


def map_layers(src, map=None, yaml=None, head_from=None, **duplicates):
    """Explicit layer list (map='a:0,b:0,a:1' or 'a:0-15,b:8-23') or a mergekit passthrough YAML
    (slices of layer_range [start, end) from named models; Goliath-style frankenmerges), built as
    mergekit builds it: the embeddings come from the first slice's model, the final norm and head
    from the last slice's, and a `scale` multiplies every tensor its filters select, weight by weight
    (so a scale on the first slice also scales the embeddings, on the last slice the norm and head).
    An explicit head_from takes all three from that source instead, as they are."""
    if (map is None) == (yaml is None):
        raise ValueError("map: give exactly one of map (a layer list) or yaml (mergekit slices)")
    check_same_architecture(src)
    if map is not None:
        return place(src, copies(src, parse_layers(map, src)), **duplicates)
    slices = [(source_index(src, model), i, t, scopes) for model, i, t, scopes in read_slices(yaml)]
    if len({src[j].args['tie_embeddings'] for j, *_ in slices}) > 1:
        raise ValueError("map: the YAML's models differ in tie_embeddings (mergekit would take either's config)")
    names = {j: mergekit_names(src[j].cfg) for j in {j for j, *_ in slices}}
    plan = []
    for j, i, t, scopes in slices:
        tensors, used = scaled(src[j].layers[layer_index(src[j], i)], f'transformer.h.{i}.', names[j], scopes, t)
        origin = f"{src[j].letter}:{i}" + (f" scale {','.join(f'{x:g}' for x in sorted(used))}" if used else '')
        plan.append(Slot((j, i), tensors, origin, not used))  # a scaled copy is a distinct block (never tied)
    out = place(src, plan, **duplicates)
    if head_from is not None:
        return out
    (first, *_, first_scopes), (last, *_, last_scopes) = slices[0], slices[-1]
    head = ('transformer.ln_f.weight', 'transformer.ln_f.bias', 'lm_head.weight')
    embeddings = {k: v for k, v in src[first].rest.items() if k not in head}
    final = {k: v for k, v in src[last].rest.items() if k in head}
    out.rest = {**scaled(embeddings, '', names[first], first_scopes, 0.0)[0], **scaled(final, '', names[last], last_scopes, 0.0)[0]}
    if src[first].args['tie_embeddings']:  # no head tensor of its own: the (first slice's) embeddings
        out.rest['lm_head.weight'] = out.rest['transformer.wte.weight']
    return out


def llama_pro(src, every=None, n_layer=None):
    """LLaMA Pro block expansion / G_zero in depth: after every k-th layer a copy whose attn.c_proj and
    mlp.c_proj (weights, biases) are zero: each new block is the identity, so the model computes exactly
    what the source did; the zeroed projections get non-zero gradients at once and the rest learns after."""
    s = src[0]
    after = insert_points(len(s.layers), every, n_layer, 'llama_pro')
    plan = []
    for i, t in enumerate(s.layers):
        plan.append(Slot((0, i), t, f'a:{i}', True))
        if i in after:
            z = {k: torch.zeros_like(v) if k.startswith(('attn.c_proj.', 'mlp.c_proj.')) else v.clone() for k, v in t.items()}
            plan.append(Slot((0, i), z, f'zero(a:{i})', False))
    return place(src, plan)


def random_layers(src, every=None, n_layer=None):
    """G_random in depth: freshly initialised blocks (the model's own init, with the GPT-2 depth-scaled
    output projections for the grown depth) inserted where llama_pro would put its copies."""
    s = src[0]
    L = len(s.layers)
    after = insert_points(L, every, n_layer, 'random')
    # a throwaway GPT holding just the new blocks: vocab 1 keeps its embeddings tiny, and layer_map
    # makes its n_logical (which sets the init's depth scale) the grown depth
    tmp = GPT(GPTConfig.from_dict({**s.args, 'n_layer': len(after), 'layer_map': [0] * (L + len(after)),
                                   'vocab_size': 1, 'block_size': 1, 'attn_window': None}))
    fresh = iter(tmp.transformer.h)
    plan = []
    for i, t in enumerate(s.layers):
        plan.append(Slot((0, i), t, f'a:{i}', True))
        if i in after:
            plan.append(Slot((0, i), {k: v.to(t[k].dtype) for k, v in next(fresh).state_dict().items()}, 'new', False))
    return place(src, plan)


def lesa(src, run, lesa_range=None, lesa_lambda=5e-4, lesa_epochs=10, lesa_hidden=256, lesa_lr=1e-3, lesa_batch=64,
         lesa_max_rows=2048):
    """LESA (Learnable LLM Layer Scaling-Up, 2025, arXiv 2502.13794; lesa.py): a new layer before each
    layer i in lesa_range 'lo:hi' (default the upper half: L//2 : L, 1.5x depth), predicted from its two
    neighbours."""
    for key, value in (('lesa_epochs', lesa_epochs), ('lesa_hidden', lesa_hidden), ('lesa_batch', lesa_batch),
                       ('lesa_max_rows', lesa_max_rows)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"lesa: {key} must be an integer >= 1, got {value!r}")
    if not lesa_lr > 0 or not 0 <= lesa_lambda <= 1:
        raise ValueError(f"lesa: lesa_lr must be > 0 and lesa_lambda in [0, 1], got {lesa_lr!r}, {lesa_lambda!r}")
    s = src[0]
    layers, L = s.layers, len(s.layers)
    if L < 3:
        raise ValueError(f"lesa needs a source with at least 3 layers (it learns from layer triples), got {L}")
    rng = re.fullmatch(r'(\d+):(\d+)', str(lesa_range if lesa_range is not None else f'{L // 2}:{L}'))
    lo, hi = (int(rng.group(1)), int(rng.group(2))) if rng else (-1, -1)
    if not 1 <= lo < hi <= L:
        raise ValueError(f"lesa_range {lesa_range!r}: use 'lo:hi' with 1 <= lo < hi <= {L} (a new layer before each layer lo..hi-1)")
    new, stats = lesa_layers(layers, s.args, lo, hi, lesa_lambda, lesa_epochs, lesa_hidden, lesa_lr, lesa_batch, lesa_max_rows,
                             device=run.device, progress=run.progress)
    plan = []
    for i, t in enumerate(layers):
        if i in new:
            plan.append(Slot((0, i - 1), new[i], f'lesa(a:{i - 1},a:{i})', False))
        plan.append(Slot((0, i), t, f'a:{i}', True))
    out = place(src, plan)
    out.info = dict(lesa=stats)
    return out

# -----------------------------------------------------------------------------
# width and weight sharing


def width(src, factor=None, n_embd=None, mlp_hidden=None, init='net2net', noise=0.0):
    """Wider: residual width n_embd (heads grow with it, head_dim kept), MLP hidden size mlp_hidden;
    factor k multiplies both (default 2). The new units and dimensions start as
    - 'net2net' (G_direct in width): copies of the old ones, exact (net2net below);
    - 'zero' (G_zero): whatever reads them is random, what they write is zero, exact (zero_width below);
    - 'random' (G_random): GPT-2's init everywhere they appear; the old weights kept as they are."""
    s = src[0]
    a = s.args
    d, H = a['n_embd'], a['mlp_hidden'] or 4 * a['n_embd']
    if init not in ('net2net', 'zero', 'random'):
        raise ValueError(f"width: init must be 'net2net', 'zero' or 'random', got {init!r}")
    check_noise(noise)
    if noise and init != 'net2net':
        raise ValueError("width: noise breaks the symmetry of net2net's copies; it does not apply to init='zero'/'random'")
    if factor is None and n_embd is None and mlp_hidden is None:
        factor = 2
    if factor is not None and (not isinstance(factor, int) or factor < 1):
        raise ValueError(f"width: factor must be a positive integer, got {factor!r}")
    n_embd = n_embd if n_embd is not None else d * (factor or 1)
    mlp_hidden = mlp_hidden if mlp_hidden is not None else H * (factor or 1)
    hd, group = d // a['n_head'], a['n_head'] // (a['n_kv_head'] or a['n_head'])  # query heads per kv head
    step = d if init == 'net2net' else hd * group
    if not isinstance(n_embd, int) or n_embd < d or n_embd % step:
        why = 'every dimension is duplicated' if init == 'net2net' else f'whole heads of {hd}' + (f', {group} per kv head' if group > 1 else '')
        raise ValueError(f"width: n_embd={n_embd!r} must be a multiple of {step}, at least the source's {d} ({why})")
    if not isinstance(mlp_hidden, int) or mlp_hidden < H:
        raise ValueError(f"width: mlp_hidden={mlp_hidden!r} must be >= the source's {H}")
    if n_embd == d and mlp_hidden == H:
        raise ValueError("width: nothing to grow (n_embd and mlp_hidden unchanged)")
    if init == 'net2net':
        return net2net(s, n_embd, mlp_hidden, noise)
    return embedded_width(s, n_embd, mlp_hidden, zero=init == 'zero')


def net2net(s, n_embd, mlp_hidden, noise):
    """Function-preserving widening (Net2Net, 2015, arXiv 1511.05641; bert2BERT, 2021, arXiv 2110.07143).
    MLP hidden to any larger size: hidden unit j copies unit j mod H (fan-in rows), fan-out columns
    divided by the copy count. Residual width x k: every dimension duplicated, x' = [x]*k, which keeps
    LayerNorm/RMSNorm statistics (a partial duplication would not), so norm gains/biases, embeddings
    and producers' rows are repeated and every consumer of the residual stream divides its fan-in by k.
    Heads are duplicated whole (k x n_head, k x n_kv_head, same head_dim, so rotary and the
    1/sqrt(head_dim) scale are untouched). Tied embeddings are untied: the input needs [E]*k, the
    head [E/k]*k (tied, logits would be k x)."""
    a = s.args
    d, H = a['n_embd'], a['mlp_hidden'] or 4 * a['n_embd']
    k = n_embd // d
    g = torch.arange(mlp_hidden) % H  # new hidden unit -> the unit it copies
    count = torch.bincount(g, minlength=H)
    hd = d // a['n_head']
    nq, nkv = a['n_head'] * hd, (a['n_kv_head'] or a['n_head']) * hd
    dup = lambda t: torch.cat([t] * k, dim=0) if k > 1 else t          # producers of the residual: repeat rows
    split = lambda t: torch.cat([t / k] * k, dim=-1) if k > 1 else t   # consumers: fan-in divided over the copies
    qkv = lambda t, f: torch.cat([f(x) for x in t.split([nq, nkv, nkv])])  # heads: q, k, v each repeated
    rules = {
        'attn.c_attn.weight': lambda t: qkv(t, lambda x: split(dup(x))), 'attn.c_attn.bias': lambda t: qkv(t, dup),
        'attn.c_proj.weight': lambda t: dup(split(t)), 'attn.c_proj.bias': dup,
        'mlp.c_fc.weight': lambda t: split(t[g]), 'mlp.c_fc.bias': lambda t: t[g],
        'mlp.c_up.weight': lambda t: split(t[g]), 'mlp.c_up.bias': lambda t: t[g],
        'mlp.c_proj.weight': lambda t: dup(t[:, g] / count[g].to(t.dtype)), 'mlp.c_proj.bias': dup,
    }
    blocks = [{key: rules.get(key, dup)(t) for key, t in layer.items()} for layer in s.layers]
    if noise:
        blocks = [{key: jitter(t, noise) for key, t in b.items()} for b in blocks]
    rest = {key: split(t) if key == 'lm_head.weight' else torch.cat([t] * k, dim=-1) if k > 1 else t
            for key, t in s.rest.items()}  # embeddings repeat their columns, ln_f its gains
    tie = a['tie_embeddings'] and k == 1
    if tie:
        rest['lm_head.weight'] = rest['transformer.wte.weight']
    args = dict(n_embd=n_embd, n_head=a['n_head'] * k, n_kv_head=a['n_kv_head'] and a['n_kv_head'] * k,
                mlp_hidden=mlp_hidden if mlp_hidden != 4 * n_embd else None, tie_embeddings=tie)
    layers = [dict(origin=f'a:{i}', new=False, block=i) for i in range(len(blocks))]
    return Grown(blocks=blocks, layers=layers, args=args, rest=rest, info=dict(untied=a['tie_embeddings'] and not tie))


def embedded_width(s, n_embd, mlp_hidden, zero):
    """G_random / G_zero in width (Stacking Your Transformers, 2024, arXiv 2405.15319): a freshly
    initialised model of the new size with the old weights written into its leading rows/columns
    (old heads first, so grouped-query heads keep their kv heads). With zero=True the new parts are
    made to leave the function unchanged:
    - new MLP units and heads: fan-in random, fan-out (their mlp.c_proj / attn.c_proj columns) zero;
    - new residual dimensions: everything that reads them (the linears after each norm, the head) is
      random; everything that writes them (embeddings, the c_proj rows) holds them at a value the
      norms ignore. With RMSNorm that is 0. With LayerNorm a 0 dimension would pull the mean toward 0
      (and no per-dimension affine undoes that), so the writers are the mean of the old writers, which
      keeps every new dimension equal to the token's mean over the old ones: the mean is unchanged and
      those dimensions normalise to exactly 0.
    Either way the old dimensions' mean square (RMSNorm) or variance (LayerNorm) is now averaged
    over n_embd instead of d dimensions, a factor d/n_embd; old norm gains times sqrt(d/n_embd) and
    norm_eps times d/n_embd restore every normalised value exactly. The random readers give the new
    dimensions a gradient at once (zeros on both sides would never train)."""
    a = s.args
    d, H = a['n_embd'], a['mlp_hidden'] or 4 * a['n_embd']
    hd = d // a['n_head']
    n_head = n_embd // hd
    n_kv_head = a['n_kv_head'] and n_head // (a['n_head'] // a['n_kv_head'])
    args = dict(n_embd=n_embd, n_head=n_head, n_kv_head=n_kv_head, mlp_hidden=mlp_hidden if mlp_hidden != 4 * n_embd else None)
    model = GPT(GPTConfig.from_dict({**a, **args}))  # GPT-2's init for every new weight
    sd = model.state_dict()
    old = s.state_dict()
    kv, new_kv = (a['n_kv_head'] or a['n_head']) * hd, (n_kv_head or n_head) * hd
    for key, t in sd.items():
        parts = [(t, old[key])]
        if '.attn.c_attn.' in key:  # q | k | v rows: each part's old rows go first
            parts = zip(t.split([n_embd, new_kv, new_kv]), old[key].split([d, kv, kv]))
        for new, o in parts:
            new[tuple(slice(0, n) for n in o.shape)] = o
    if zero:
        c = d / n_embd
        for key, t in sd.items():
            if key.endswith(('attn.c_proj.weight', 'mlp.c_proj.weight')):
                t[:, d if '.attn.' in key else H:] = 0  # fan-out of new heads / MLP units
            if key.endswith(('c_proj.weight', 'c_proj.bias')):
                t[d:] = t[:d].mean(0) if a['norm'] == 'layernorm' else 0  # writers of new residual dimensions
            elif key in ('transformer.wte.weight', 'transformer.wpe.weight'):
                t[:, d:] = t[:, :d].mean(1, keepdim=True) if a['norm'] == 'layernorm' else 0
            elif key.endswith(('ln_1.weight', 'ln_2.weight', 'ln_f.weight')):
                t.mul_(c ** 0.5)
        args['norm_eps'] = a['norm_eps'] * c
    dtype = s.layers[0]['ln_1.weight'].dtype
    blocks, rest = split_layers({k: v.to(dtype) for k, v in sd.items()}, a['n_layer'])
    if a['tie_embeddings']:
        rest['lm_head.weight'] = rest['transformer.wte.weight']
    layers = [dict(origin=f'a:{i}', new=False, block=i) for i in range(len(blocks))]
    return Grown(blocks=blocks, layers=layers, args=args, rest=rest)


def tie(src, n_layer=None, init='average', lora_rank=None, lora_alpha=16.0):
    """Relaxed Recursive Transformers (2024, arXiv 2410.20672): L layers -> n_layer shared blocks looped
    (logical l runs block l mod K), each logical layer with a LoRA initialised from the truncated SVD of
    (its own weight - the shared one): B = U_r S_r / scale, A = V_r^T, into the adapters model.py builds
    for the looped config. Shared init: 'average' of the layers a block serves, 'stepwise' (layers at
    equal intervals, first and last kept) or 'lower' (the first K). Norm gains are first folded into the matrices that read the norm (W diag(g), shared gains
    1) so the LoRA carries them too: at full rank (n_embd) the model is exact for bias-free models;
    biases cannot be expressed by a LoRA and are shared like the weights. Everything trains afterwards."""
    s = src[0]
    L, d = len(s.layers), s.args['n_embd']
    K = n_layer if n_layer is not None else L // 2
    if not isinstance(K, int) or not 1 <= K < L:
        raise ValueError(f"tie: n_layer={K!r} (shared blocks) must be in 1..{L - 1}")
    if init not in ('average', 'stepwise', 'lower'):
        raise ValueError(f"tie: init must be 'average', 'stepwise' or 'lower', got {init!r}")
    hidden = s.args['mlp_hidden'] or 4 * d
    r = lora_rank if lora_rank is not None else d // 8
    if not isinstance(r, int) or not 0 <= r <= min(d, hidden):
        raise ValueError(f"tie: lora_rank={r!r} must be in 0..{min(d, hidden)} (full rank)")
    targets = {'qkv': 'attn.c_attn', 'attn_out': 'attn.c_proj', 'mlp_in': 'mlp.c_fc', 'mlp_up': 'mlp.c_up', 'mlp_out': 'mlp.c_proj'}
    reads = {'attn.c_attn': 'ln_1', 'mlp.c_fc': 'ln_2', 'mlp.c_up': 'ln_2'}
    folded = []
    for layer in s.layers:
        t = {k: v.float() for k, v in layer.items()}
        for lin, ln in reads.items():
            if f'{lin}.weight' in t:
                t[f'{lin}.weight'] = t[f'{lin}.weight'] * t[f'{ln}.weight']
        for ln in ('ln_1', 'ln_2'):
            t[f'{ln}.weight'] = torch.ones_like(t[f'{ln}.weight'])
        folded.append(t)
    served = [list(range(b, L, K)) for b in range(K)]  # the logical layers each shared block runs
    if init == 'average':
        picked = served
    elif init == 'stepwise':
        picked = [[round(b * (L - 1) / (K - 1)) if K > 1 else 0] for b in range(K)]
    else:
        picked = [[b] for b in range(K)]
    shared = [{k: sum(folded[l][k] for l in ls) / len(ls) for k in folded[0]} for ls in picked]
    args = dict(n_layer=K, layer_map=[l % K for l in range(L)], lora_rank=r, lora_alpha=lora_alpha,
                lora_targets=list(LORA_TARGETS), ia3=False, adapter_layers='all')
    with torch.device('meta'):  # the adapters model.py makes for this config
        model = GPT(GPTConfig.from_dict({**s.args, **args}))
    adapters, dtype = {}, s.layers[0]['ln_1.weight'].dtype
    for name, lora in model.named_modules():
        if isinstance(lora, LoRA):  # name = adapters.<logical layer>.lora.<target>
            l, lin = int(name.split('.')[1]), targets[name.rsplit('.', 1)[1]]
            US, A = svd(folded[l][f'{lin}.weight'] - shared[l % K][f'{lin}.weight'], rank=r)
            dead = A.norm(dim=1) == 0  # directions of a zero residual: B is 0 there; give A the usual
            A[dead] = (torch.rand_like(A[dead]) * 2 - 1) / A.shape[1] ** 0.5  # LoRA init so both can learn
            adapters[f'{name}.lora_B'], adapters[f'{name}.lora_A'] = (US / lora_scale(lora_alpha, r)).to(dtype), A.to(dtype)
    blocks = [{k: v.to(dtype) for k, v in b.items()} for b in shared]
    layers = [dict(origin=f'a:{l}', new=False, block=l % K) for l in range(L)]
    return Grown(blocks=blocks, layers=layers, args=args, adapters=adapters, info=dict(trainable='all', shared_init=picked))

def learned(src, batches, run, n_layer=None, n_embd=None, mlp_hidden=None, depth_init='stack', ligo_steps=100, ligo_lr=1e-2):
    """G_learn: LiGO (ligo.py), from one source or several (their layers mixed in depth, or side by side
    in width). The operator's own training (ligo_steps steps on `batches`) is counted as the grown
    model's cost: its tokens, FLOPs and time go into the checkpoint's totals."""
    import ligo  # only this method needs it
    sd, args, info = ligo.grow([(s.args, s.state_dict()) for s in src], n_layer=n_layer, n_embd=n_embd,
                               mlp_hidden=mlp_hidden, depth_init=depth_init, batches=batches, steps=ligo_steps, lr=ligo_lr,
                               device=run.device, autocast=run.autocast, progress=run.progress)
    blocks, rest = split_layers(sd, args['n_layer'])
    layers = [dict(origin='ligo', new=False, block=i) for i in range(len(blocks))]
    operator = dict(tokens=info['tokens'], flops=info['flops'], time=info['time'])
    return Grown(blocks=blocks, layers=layers, args=args, rest=rest,
                 info=dict(ligo={k: v for k, v in info.items() if k != 'losses'}, operator=operator))


# -----------------------------------------------------------------------------
# the registry: every method, the options it takes (nothing else reaches it), how many sources


class Method(NamedTuple):
    build: object        # build(src, **options) -> Grown; src = the plain Sources
    options: tuple       # the options it accepts
    max_sources: int     # 1 = one source checkpoint; None = any number
    summary: str
    needs_data: bool = False  # build also gets batches=, an iterator of (x, y) training batches
    needs_one_of: tuple = ()  # options of which it needs at least one (what to build)
    takes_head: bool = False  # build also gets head_from=, grow()'s head_from as given (None: its own rule)
    trains: bool = False      # build also gets run=, a Run: it trains or fits something, on run.device


class Run(NamedTuple):
    """Where and how an operator that trains or fits runs: the device its tensors live on, the
    mixed-precision context it trains under (a callable, as device.Policy.autocast) and whether it
    shows a progress bar."""
    device: str = 'cpu'
    autocast: object = nullcontext
    progress: bool = False


DUPLICATES = ('noise', 'tied', 'lora_rank', 'lora_alpha', 'ia3', 'adapter_layers')  # place(): how duplicates are made

METHODS = {
    'stack': Method(stack, ('factor', 'n_layer') + DUPLICATES, None,
                    "G_stack / G_direct in depth: the whole model repeated"),
    'interleave': Method(interleave, ('factor', 'every', 'n_layer') + DUPLICATES, None,
                         "each layer repeated in place (0,0,1,1,...), or sources alternated (a0,b0,a1,b1,...)"),
    'dus': Method(dus, ('m', 'n_layer') + DUPLICATES, 2, "SOLAR depth up-scaling"),
    'midas': Method(midas, ('block',) + DUPLICATES, 1, "MIDAS: the middle block of layers duplicated in place (one stage)"),
    'map': Method(map_layers, ('map', 'yaml') + DUPLICATES, None,
                  "an explicit layer list, or mergekit passthrough slices (YAML)", takes_head=True,
                  needs_one_of=('map', 'yaml')),
    'llama_pro': Method(llama_pro, ('every', 'n_layer'), 1,
                        "LLaMA Pro / G_zero in depth: identity blocks (zero output projections), exact"),
    'random': Method(random_layers, ('every', 'n_layer'), 1, "G_random in depth: freshly initialised blocks"),
    'lesa': Method(lesa, ('lesa_range', 'lesa_lambda', 'lesa_epochs', 'lesa_hidden', 'lesa_lr', 'lesa_batch',
                          'lesa_max_rows'), 1, "LESA: intermediate layers predicted from their neighbours", trains=True),
    'width': Method(width, ('factor', 'n_embd', 'mlp_hidden', 'init', 'noise'), 1,
                    "wider residual (and heads), MLP hidden: net2net copies (G_direct), zero (G_zero), random (G_random)"),
    'tie': Method(tie, ('n_layer', 'init', 'lora_rank', 'lora_alpha'), 1,
                  "Relaxed Recursive Transformer: shared blocks looped, SVD-initialised LoRA per layer"),
    'ligo': Method(learned, ('n_layer', 'n_embd', 'mlp_hidden', 'depth_init', 'ligo_steps', 'ligo_lr'), None,
                   "LiGO / G_learn in depth and width: a learned linear map from the sources' weights", needs_data=True,
                   needs_one_of=('n_layer', 'n_embd', 'mlp_hidden'), trains=True),
}


def check_options(method, options):
    """ValueError (one line) unless `method` exists and takes every option in `options`: cheap, so
    train.py can call it at start rather than fail at grow_at_iter."""
    if method not in METHODS:
        raise ValueError(f"unknown growth method {method!r}; choose from {', '.join(METHODS)}")
    bad = sorted(set(options) - set(METHODS[method].options))
    if bad:
        raise ValueError(f"option {', '.join(bad)} does not apply to method {method} (it takes: {', '.join(METHODS[method].options)})")
    needs = METHODS[method].needs_one_of
    if needs and not set(needs) & set(options):
        raise ValueError(f"method {method} needs {' or '.join(needs)} (what to build)")
    return METHODS[method]


def check_growth_schedule(steps):
    """train.py's growth steps ([{'iter', 'method', 'options'}], iterations increasing) checked before
    the run starts, so a typo fails at once rather than at the growth step."""
    out, last = [], 0
    for n, step in enumerate(steps):
        if not isinstance(step, dict) or set(step) - {'iter', 'method', 'options'} or not {'iter', 'method'} <= set(step):
            raise ValueError(f"grow_steps[{n}] must be a dict with 'iter', 'method' and optionally 'options', got {step!r}")
        step = {'options': {}, **step}
        if not isinstance(step['iter'], int) or step['iter'] <= last:
            raise ValueError(f"grow_steps[{n}]: iter must be an integer > {last} (steps in increasing order), got {step['iter']!r}")
        if not isinstance(step['options'], dict):
            raise ValueError(f"grow_steps[{n}]: options must be a dict, got {step['options']!r}")
        check_options(step['method'], step['options'])
        out.append(step)
        last = step['iter']
    return out


def grow(sources, method, names=None, head_from=None, seed=0, batches=None, run=Run(), **options):
    """sources: loaded checkpoint dicts; names: optional names for them (map/yaml/head_from also take
    letters a, b, ...); head_from: the source of embeddings, final norm, head and tokenizer (default the
    first; given explicitly it also overrides map's YAML rule). batches: training batches, for methods
    that learn from data. run: where operators that train or fit (LiGO, LESA) run (a Run: device,
    autocast, progress bar). Returns a new checkpoint dict; randomness (noise, new inits, LESA) is seeded
    by `seed` and leaves the caller's RNG state alone. Unchanged tensors are shared with the sources,
    never modified."""
    m = check_options(method, options)
    if not sources:
        raise ValueError("no source checkpoints")
    if m.max_sources is not None and len(sources) > m.max_sources:
        raise ValueError(f"method {method} takes {'one source checkpoint' if m.max_sources == 1 else f'at most {m.max_sources} sources'}, got {len(sources)}")
    if len(sources) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} sources")
    if m.needs_data and batches is None:
        raise ValueError(f"method {method} needs training data (--data DIR)")
    if names is not None and len(names) != len(sources):
        raise ValueError(f"{len(names)} names for {len(sources)} sources")
    src = [plain_source(ck, LETTERS[j], None if names is None or names[j] is None else str(names[j]))
           for j, ck in enumerate(sources)]
    head = src[source_index(src, head_from) if head_from is not None else 0]
    toks = [{k: (ck.get('tokenizer') or {}).get(k) for k in ('tokenizer', 'vocab_size', 'chars')} for ck in sources]
    for s, t in zip(src, toks):
        if t != toks[0]:
            raise ValueError(f"sources use different tokenizers: a={toks[0]}, {s.letter}={t}"[:300])
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        extra = dict(batches=batches) if m.needs_data else {}
        if m.takes_head:
            extra['head_from'] = head_from
        if m.trains:
            extra['run'] = run
        out = m.build(src, **options, **extra)
    args = {**head.args, **out.args}
    sd = dict(head.rest if out.rest is None else out.rest)
    for p, block in enumerate(out.blocks):
        sd.update({f'transformer.h.{p}.{k}': v for k, v in block.items()})
    sd.update(out.adapters)
    infos = []
    for s, ck in zip(src, sources):
        infos.append(dict(name=s.name, letter=s.letter, n_layer=len(s.layers), n_embd=s.args['n_embd'],
                          iter_num=ck.get('iter_num'), tokens_seen=ck.get('tokens_seen', 0)))
        if ck.get('provenance'):
            infos[-1]['provenance'] = ck['provenance']
    provenance = dict(sources=infos, method=method, options=dict(options, seed=seed, head_from=head.letter),
                      layers=out.layers, new_blocks=out.new_blocks, **out.info)
    operator = out.info.get('operator', {})  # what a learned operator's own training cost
    return make_checkpoint(sd, args, tokenizer=sources[src.index(head)].get('tokenizer'), provenance=provenance,
                           tokens_seen=sum(ck.get('tokens_seen') or 0 for ck in sources) + operator.get('tokens', 0),
                           flops_spent=sum(ck.get('flops_spent') or 0.0 for ck in sources) + operator.get('flops', 0.0),
                           elapsed=sum(ck.get('elapsed') or 0.0 for ck in sources) + operator.get('time', 0.0))

# -----------------------------------------------------------------------------
# command line


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def weights_sha256(state_dict):
    """A source that is not one file (a run or Hugging Face directory, hf:, llama2c:) is identified by
    its weights: the hash of every tensor's name and bytes."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def main(argv=None):
    p = ArgumentParser(description="Grow a GPT checkpoint (see the module docstring and README).")
    p.add_argument('sources', nargs='*', help="checkpoints; NAME=PATH names one (otherwise a, b, c, ...)")
    p.add_argument('--method', required=True, help=' | '.join(METHODS))
    p.add_argument('--out', required=True, help="output checkpoint (written atomically)")
    p.add_argument('--head_from', help="source of embeddings, final norm, head and tokenizer (default: first; YAML: mergekit's rule)")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--data', help="prepared data directory (train.bin, val.bin, meta.json) for methods that learn from data")
    p.add_argument('--batch_size', type=int, default=8, help="with --data: sequences per training batch")
    p.add_argument('--device', default='auto', help="where LiGO and LESA train/fit: auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps")
    p.add_argument('--dtype', default='float32', help="LiGO's training autocast: float32 | bfloat16 | float16 | auto (device.py's policy)")
    g = p.add_argument_group('depth')
    g.add_argument('--factor', type=int, help="stack: repeats (default 2); interleave: copies per layer; width: x size")
    g.add_argument('--n_layer', type=int, help="target depth (stack/interleave/dus/llama_pro/random) or shared blocks (tie)")
    g.add_argument('--every', type=int, help="llama_pro/random/interleave: after every k-th layer (default 1)")
    g.add_argument('--m', type=int, help="dus: layers dropped from each copy (default n_layer // 4)")
    g.add_argument('--block', type=int, help="midas: how many middle layers are duplicated (default 1)")
    g.add_argument('--map', help="map: 'a:0,b:0,a:1' or 'a:0-15,b:8-23' (inclusive ranges)")
    g.add_argument('--yaml', help="map: mergekit passthrough slices file (models: letters, names or paths)")
    g.add_argument('--noise', type=float, help="relative Gaussian noise on duplicated weights (symmetry breaking)")
    g.add_argument('--tied', action='store_true', help="duplicates become weight-tied virtual layers (layer_map)")
    g.add_argument('--lora_rank', type=int, help="LoRA per logical layer (identity at first; tie: SVD-initialised, default n_embd/8)")
    g.add_argument('--lora_alpha', type=float)
    g.add_argument('--ia3', action='store_true', help="IA3 adapters per logical layer (identity at first)")
    g.add_argument('--adapter_layers', help="all | virtual (adapters only on repeated occurrences of a block; with --tied)")
    g = p.add_argument_group('width / tie / lesa / ligo')
    g.add_argument('--n_embd', type=int, help="width: new residual width (net2net: a multiple of the old; else whole heads)")
    g.add_argument('--mlp_hidden', type=int, help="width: new MLP hidden size (any larger size)")
    g.add_argument('--init', help="width: new units net2net | zero | random; tie: shared block init average | stepwise | lower")
    g.add_argument('--lesa_range', help="lesa: 'lo:hi', a new layer before each layer lo..hi-1 (default upper half)")
    g.add_argument('--lesa_epochs', type=int)
    g.add_argument('--lesa_lambda', type=float)
    g.add_argument('--lesa_hidden', type=int)
    g.add_argument('--lesa_lr', type=float)
    g.add_argument('--lesa_batch', type=int)
    g.add_argument('--lesa_max_rows', type=int, help="lesa: samples per epoch per matrix type (default 2048)")
    g.add_argument('--depth_init', help="ligo: the direct operator it starts from in depth, stack | interleave")
    g.add_argument('--ligo_steps', type=int, help="ligo: training steps of the operator on --data (default 100)")
    g.add_argument('--ligo_lr', type=float, help="ligo: Adam learning rate of the depth tables (maps: lr / source size)")
    a = p.parse_args(argv)
    try:
        options = {k: v for k, v in vars(a).items()
                   if k not in ('sources', 'method', 'out', 'head_from', 'seed', 'data', 'batch_size', 'device', 'dtype')
                   and v is not None and v is not False}
        method = check_options(a.method, options)
        if a.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {a.batch_size}")
        policy = choose(a.device, a.dtype)
        if a.data is not None and not method.needs_data:
            raise ValueError(f"--data does not apply to method {a.method} (it learns nothing from data)")
        names, paths = [], []
        for arg in a.sources:
            name, eq, path = arg.partition('=')
            if not eq or os.path.exists(arg):
                name, path = None, arg
            names.append(name)
            paths.append(path)
        if a.yaml is not None:
            try:
                with open(a.yaml) as f:
                    options['yaml'] = f.read()
            except OSError as e:
                raise ValueError(f"cannot read {a.yaml}: {e.strerror}") from None
            known = set(LETTERS[:len(paths)]) | set(names) | set(paths)
            for model, *_ in read_slices(options['yaml']):  # models not given on the command line are paths
                if model not in known:
                    names.append(None)
                    paths.append(model)
                    known.add(model)
        # a source is known by its letter, its NAME= or the path it was given as
        names = [n if n is not None else pth for n, pth in zip(names, paths)]
        check_out_path(a.out, paths + ([a.yaml] if a.yaml else []))  # before any work: never over an input, a directory or below a file
        sources = []
        for pth in paths:
            ck = load_any(pth)
            ck.pop('optimizer', None)  # not needed; frees memory early
            sources.append(ck)
        batches = None
        if a.data is not None:  # windows of the first source's context length, drawn as train.py draws them
            block_size = sources[0]['model_args']['block_size']
            data = TokenData(a.data)
            if data.meta and sources[0].get('tokenizer'):  # ids of another tokenizer would train the operator on noise
                check_same_tokenizer(os.path.join(a.data, 'meta.json'), data.meta, sources[0]['tokenizer'])
            batches = data.stream('train', block_size, a.batch_size, (a.seed, 'train', 'grow'))
        run = Run(policy.device, policy.autocast, progress=True)
        grown = grow(sources, a.method, names=names, head_from=a.head_from, seed=a.seed, batches=batches, run=run, **options)
        for info, pth, ck in zip(grown['provenance']['sources'], paths, sources):
            info.update(path=pth, **({'sha256': sha256(pth)} if os.path.isfile(pth) else {'weights_sha256': weights_sha256(ck['model'])}))
        save_checkpoint(grown, a.out)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    prov = grown['provenance']
    print(f"{a.method}: {' '.join(paths)} -> {a.out}: {len(prov['layers'])} logical layers on "
          f"{grown['model_args']['n_layer']} blocks ({len(prov['new_blocks'])} new), "
          f"{grown['param_counts']['unique']:,} params", file=sys.stderr)


if __name__ == '__main__':
    main()
