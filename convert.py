"""
Move models in and out of nanogrow.

Import a pretrained model as a nanogrow checkpoint (train.py / sample.py call import_model for
init_from='hf:...' or 'llama2c:...'):
$ python convert.py import hf:path/to/hf_dir --out gpt2.pt          # GPT-2, GPT-Neo, Llama-family
$ python convert.py import llama2c:../shared/models/stories260K/stories260K.bin --out s260k.pt
Export any nanogrow checkpoint (tied layers, LoRA, IA3 and low-rank factors merged first) as a
Hugging Face directory that transformers loads with AutoModelForCausalLM.from_pretrained, with its
tokenizer (tokenizer.json; AutoTokenizer encodes exactly as tokenizer.py does):
$ python convert.py export out/last.pt --out hf_dir [--family auto|gpt2|gpt_neo|llama] [--dtype float32]

Importing reads config.json and the weight files directly (json + safetensors / torch.load), so it
needs no transformers; safetensors is needed for .safetensors files and for export, tokenizers
for exporting a tokenizer.
"""
import argparse
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
import torch

from checkpoint import check_out_path, make_checkpoint, safe_torch_load
from configurator import ArgumentParser
from model import GPT, GPTConfig

FAMILIES = ('gpt2', 'gpt_neo', 'llama')
GPT2_TOKENIZER = {'tokenizer': 'gpt2', 'vocab_size': 50257, 'eot': 50256, 'bos': None}
# buffers some transformers versions saved alongside the weights; they carry no parameters
IGNORED_SUFFIXES = ('.attn.bias', '.attn.masked_bias', '.attention.bias', '.attention.masked_bias', 'rotary_emb.inv_freq')
# tokenizer.bin: a llama2.c tokenizer travels as its own file too, so that importing the export restores it exactly
EXPORT_FILES = ('config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json',
                'tokenizer.bin')


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise ValueError("the safetensors package is needed for .safetensors files and for export: pip install safetensors")
    return safetensors.torch

# -----------------------------------------------------------------------------
# name maps: one list of (nanogrow tensor, [HF tensors], how) per family serves both directions.
# how: '' same tensor, 'T' transposed (GPT-2's Conv1D stores Linear weights as [in, out]),
# 'qkv' nanogrow's fused c_attn rows = the separate q, k, v projections stacked.


def name_map(family, n_layer):
    if family == 'llama':
        m = [('transformer.wte.weight', ['model.embed_tokens.weight'], ''),
             ('transformer.ln_f.weight', ['model.norm.weight'], '')]
        for i in range(n_layer):
            p, h = f'transformer.h.{i}.', f'model.layers.{i}.'
            m += [(p + 'ln_1.weight', [h + 'input_layernorm.weight'], ''),
                  (p + 'ln_2.weight', [h + 'post_attention_layernorm.weight'], '')]
            for t in ('weight', 'bias'):
                m += [(p + 'attn.c_attn.' + t, [h + f'self_attn.{x}_proj.' + t for x in 'qkv'], 'qkv'),
                      (p + 'attn.c_proj.' + t, [h + 'self_attn.o_proj.' + t], ''),
                      (p + 'mlp.c_fc.' + t, [h + 'mlp.gate_proj.' + t], ''),
                      (p + 'mlp.c_up.' + t, [h + 'mlp.up_proj.' + t], ''),
                      (p + 'mlp.c_proj.' + t, [h + 'mlp.down_proj.' + t], '')]
    else:  # gpt2 and gpt_neo share embeddings, norms and the MLP names
        m = [(k, [k], '') for k in ('transformer.wte.weight', 'transformer.wpe.weight',
                                    'transformer.ln_f.weight', 'transformer.ln_f.bias')]
        for i in range(n_layer):
            p = f'transformer.h.{i}.'
            m += [(p + k, [p + k], '') for k in ('ln_1.weight', 'ln_1.bias', 'ln_2.weight', 'ln_2.bias')]
            for t in ('weight', 'bias'):
                how = 'T' if family == 'gpt2' and t == 'weight' else ''
                m += [(p + 'mlp.c_fc.' + t, [p + 'mlp.c_fc.' + t], how),
                      (p + 'mlp.c_proj.' + t, [p + 'mlp.c_proj.' + t], how)]
                if family == 'gpt2':
                    m += [(p + 'attn.c_attn.' + t, [p + 'attn.c_attn.' + t], how),
                          (p + 'attn.c_proj.' + t, [p + 'attn.c_proj.' + t], how)]
                else:
                    m += [(p + 'attn.c_attn.' + t, [p + f'attn.attention.{x}_proj.' + t for x in 'qkv'], 'qkv'),
                          (p + 'attn.c_proj.' + t, [p + 'attn.attention.out_proj.' + t], '')]
    m.append(('lm_head.weight', ['lm_head.weight'], ''))
    return m

# -----------------------------------------------------------------------------
# import


def import_model(spec):
    """'hf:<dir or hub name>' or 'llama2c:<model.bin>[,<tokenizer.bin>]' -> nanogrow checkpoint dict."""
    kind, _, arg = spec.partition(':')
    if kind == 'hf' and arg:
        args, sd, tok = import_hf(arg)
    elif kind == 'llama2c' and arg:
        path, _, tok_path = arg.partition(',')
        args, sd, tok = import_llama2c(path, tok_path or None)
    else:
        raise ValueError(f"unknown model spec {spec!r}: use 'hf:<dir or hub name>' or 'llama2c:<model.bin>[,<tokenizer.bin>]'")
    try:
        config = GPTConfig(**args)
    except ValueError as e:
        raise ValueError(f"{spec}: {e}") from None
    with torch.device('meta'):  # shapes without allocating anything
        meta = GPT(config)
    for k, v in meta.state_dict().items():
        if sd[k].shape != v.shape:
            raise ValueError(f"{spec}: shape mismatch for {k}: the file has {list(sd[k].shape)}, its config implies {list(v.shape)}")
    return make_checkpoint(sd, meta.config.to_dict(), tokenizer=tok, config={'init_from': spec})


def hf_dir(name):
    """A local directory, or a hub name fetched with huggingface_hub (uses its cache when offline)."""
    if os.path.isdir(name):
        return name
    if os.path.exists(name):
        raise ValueError(f"{name} is not a directory: hf: wants a Hugging Face model directory (config.json + weights)")
    if name.startswith(('/', '.', '~')) or name.count('/') > 1:
        raise FileNotFoundError(f"no such directory: {name}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"no such directory: {name} (and huggingface_hub, needed for hub names, is not installed)")
    try:
        d = snapshot_download(name, allow_patterns=['*.json', '*.safetensors'])
        if not any(f.endswith('.safetensors') for f in os.listdir(d)):  # older repos only have .bin
            d = snapshot_download(name, allow_patterns=['*.json', 'pytorch_model*.bin'])
        return d
    except Exception as e:
        raise ValueError(f"{name!r} is not a local directory and the Hugging Face hub is unreachable or lacks it "
                         f"({type(e).__name__}); pass a local directory: hf:/path/to/model_dir")


def load_hf_tensors(d):
    """All tensors of a HF directory: model.safetensors, pytorch_model.bin, or either sharded."""
    for single, index in (('model.safetensors', 'model.safetensors.index.json'),
                          ('pytorch_model.bin', 'pytorch_model.bin.index.json')):
        if os.path.exists(os.path.join(d, single)):
            files = [single]
        elif os.path.exists(os.path.join(d, index)):
            try:
                with open(os.path.join(d, index)) as f:
                    weight_map = json.load(f)['weight_map']
                files = sorted(set(weight_map.values()))
                assert all(isinstance(fn, str) and os.path.basename(fn) == fn for fn in files)
            except (ValueError, KeyError, TypeError, AttributeError, AssertionError):
                raise ValueError(f"{os.path.join(d, index)}: not a shard index (want {{\"weight_map\": {{tensor: file name}}}})") from None
        else:
            continue
        sd = {}
        for fn in files:
            path = os.path.join(d, fn)
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path} is listed in {index} but missing")
            try:
                if fn.endswith('.safetensors'):
                    sd.update(_safetensors().load_file(path))
                else:
                    sd.update(safe_torch_load(path, 'weights file', 'a PyTorch weights file'))
            except ValueError:
                raise
            except Exception as e:
                raise ValueError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return sd
    raise FileNotFoundError(f"{d}: no model.safetensors, pytorch_model.bin or sharded index next to config.json")


def hf_args(c, where):
    """config.json dict -> (family, GPTConfig kwargs). Anything nanogrow can't run exactly is an error."""
    def need(ok, what):
        if not ok:
            raise ValueError(f"{where}: {what} is not supported")
    mt = c.get('model_type')
    if mt == 'gpt2':
        act = {'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh', 'gelu': 'gelu'}.get(c.get('activation_function', 'gelu_new'))
        need(act, f"activation_function={c.get('activation_function')!r}")
        need(not c.get('scale_attn_by_inverse_layer_idx'), "scale_attn_by_inverse_layer_idx=true")
        need(not c.get('add_cross_attention'), "add_cross_attention=true")
        return 'gpt2', dict(
            block_size=c['n_positions'], vocab_size=c['vocab_size'], n_layer=c['n_layer'], n_head=c['n_head'],
            n_embd=c['n_embd'], mlp_hidden=c.get('n_inner'), mlp=act, norm_eps=c.get('layer_norm_epsilon', 1e-5),
            attn_scale=None if c.get('scale_attn_weights', True) else 1.0,
            tie_embeddings=c.get('tie_word_embeddings', True))
    if mt == 'gpt_neo':
        act = {'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh', 'gelu': 'gelu'}.get(c.get('activation_function', 'gelu_new'))
        need(act, f"activation_function={c.get('activation_function')!r}")
        types = [t for kinds, n in c['attention_types'] for _ in range(n) for t in kinds]
        need(len(types) == c['num_layers'] and set(types) <= {'global', 'local'}, f"attention_types={c['attention_types']!r}")
        return 'gpt_neo', dict(
            block_size=c['max_position_embeddings'], vocab_size=c['vocab_size'], n_layer=c['num_layers'],
            n_head=c['num_heads'], n_embd=c['hidden_size'], mlp_hidden=c.get('intermediate_size'), mlp=act,
            norm_eps=c.get('layer_norm_epsilon', 1e-5), qkv_bias=False, attn_scale=1.0,  # GPT-Neo does not scale scores
            attn_window=[c['window_size'] if t == 'local' else 0 for t in types],
            tie_embeddings=c.get('tie_word_embeddings', True))
    if mt == 'llama':
        need(c.get('hidden_act', 'silu') == 'silu', f"hidden_act={c.get('hidden_act')!r}")
        nh, d = c['num_attention_heads'], c['hidden_size']
        need(c.get('head_dim') in (None, d // nh), f"head_dim={c.get('head_dim')} (nanogrow uses hidden_size/num_attention_heads={d // nh})")
        rope = c.get('rope_parameters') or c.get('rope_scaling') or {}
        need(rope.get('rope_type', rope.get('type', 'default')) == 'default', f"rope scaling {rope!r}")
        bias = c.get('attention_bias', False) or c.get('mlp_bias', False)
        return 'llama', dict(
            block_size=c.get('max_position_embeddings', 2048), vocab_size=c['vocab_size'], n_layer=c['num_hidden_layers'],
            n_head=nh, n_kv_head=c.get('num_key_value_heads') or nh, n_embd=d, mlp_hidden=c['intermediate_size'],
            mlp='swiglu', norm='rmsnorm', norm_eps=c.get('rms_norm_eps', 1e-6), pos='rope', rope_layout='half',
            rope_theta=float(c.get('rope_theta') or rope.get('rope_theta', 10000.0)),
            bias=bias, qkv_bias=c.get('attention_bias', False), tie_embeddings=c.get('tie_word_embeddings', False))
    raise ValueError(f"{where}: unsupported model_type {mt!r} (supported: {', '.join(FAMILIES)})")


def import_hf(name):
    d = hf_dir(name)
    cfg_path = os.path.join(d, 'config.json')
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{d}: no config.json (not a Hugging Face model directory)")
    try:
        with open(cfg_path) as f:
            c = json.load(f)
        if not isinstance(c, dict):
            raise ValueError(f"{cfg_path} must hold a JSON object, got a {type(c).__name__}")
        family, args = hf_args(c, d)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{cfg_path}: unreadable config ({type(e).__name__}: {e})") from None
    try:
        GPTConfig(**args)  # before reading the weights: a bad shape is this file's fault
    except ValueError as e:
        raise ValueError(f"{cfg_path}: {e}") from None
    hf = load_hf_tensors(d)
    if family != 'llama':  # old GPT-2/Neo files name the base model's tensors without 'transformer.'
        hf = {k if k.startswith(('transformer.', 'lm_head.')) else 'transformer.' + k: v for k, v in hf.items()}
    with torch.device('meta'):
        expected = GPT(GPTConfig(**args)).state_dict()
    sd, used = {}, set()
    for nk, hks, how in name_map(family, args['n_layer']):
        if nk not in expected:
            continue
        if nk == 'lm_head.weight' and args['tie_embeddings']:
            sd[nk] = sd['transformer.wte.weight']  # the same tensor, as in a nanogrow state dict
            used.add(nk)
            continue
        missing = [k for k in hks if k not in hf]
        if missing and family == 'llama' and nk.endswith('.bias'):
            sd[nk] = torch.zeros(expected[nk].shape)  # attention_bias / mlp_bias set only one side's biases
            continue
        if missing:
            raise ValueError(f"{d}: missing tensor {missing[0]} for a {family} model")
        ts = [hf[k].float() for k in hks]
        sd[nk] = (ts[0].t() if how == 'T' else torch.cat(ts) if how == 'qkv' else ts[0]).contiguous()
        used.update(hks)
    extra = [k for k in hf if k not in used and not k.endswith(IGNORED_SUFFIXES) and k != 'lm_head.weight']
    if extra:
        raise ValueError(f"{d}: unexpected tensor {extra[0]} for a {family} model with this config.json")
    gpt2_sized = family in ('gpt2', 'gpt_neo') and args['vocab_size'] >= GPT2_TOKENIZER['vocab_size']
    return args, sd, import_tokenizer(d, c, dict(GPT2_TOKENIZER) if gpt2_sized else None)


def import_llama2c(path, tok_path=None):
    """llama.c's legacy (v0) float32 export: a header of 7 int32s then the tensors in a fixed order."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, 'rb') as f:
        header = f.read(28)
    if len(header) < 28:
        raise ValueError(f"{path}: too short for a llama2.c checkpoint")
    if struct.unpack('<I', header[:4])[0] == 0x616b3432:  # "ak42": the newer versioned exports
        raise ValueError(f"{path}: llama2.c version-{struct.unpack('<i', header[4:8])[0]} export; only the legacy v0 format is supported")
    dim, hidden, L, nh, nkv, vocab, seq = struct.unpack('<7i', header)
    tied, vocab = vocab > 0, abs(vocab)  # a negative vocab_size means the classifier is stored separately
    if min(dim, hidden, L, nh, nkv, vocab, seq) <= 0 or dim % nh or nh % nkv or (dim // nh) % 2:
        raise ValueError(f"{path}: not a llama2.c checkpoint (header dim={dim} hidden={hidden} layers={L} heads={nh}/{nkv} vocab={vocab} seq_len={seq})")
    hd, kv = dim // nh, dim // nh * nkv
    shapes = [(vocab, dim), (L, dim), (L, dim, dim), (L, kv, dim), (L, kv, dim), (L, dim, dim), (L, dim),
              (L, hidden, dim), (L, dim, hidden), (L, hidden, dim), (dim,), (2, seq, hd // 2)] + ([] if tied else [(vocab, dim)])
    sizes = [int(np.prod(s)) for s in shapes]
    if os.path.getsize(path) != 28 + 4 * sum(sizes):
        raise ValueError(f"{path}: {os.path.getsize(path)} bytes, but its header (dim={dim} layers={L} vocab={vocab}) implies {28 + 4 * sum(sizes)}")
    flat = torch.from_numpy(np.fromfile(path, dtype='<f4', offset=28))
    emb, ln1, wq, wk, wv, wo, ln2, w1, w2, w3, lnf, _rope, *head = [t.view(s) for t, s in zip(flat.split(sizes), shapes)]
    sd = {'transformer.wte.weight': emb.clone()}
    for i in range(L):
        p = f'transformer.h.{i}.'
        sd.update({p + 'ln_1.weight': ln1[i].clone(), p + 'attn.c_attn.weight': torch.cat([wq[i], wk[i], wv[i]]),
                   p + 'attn.c_proj.weight': wo[i].clone(), p + 'ln_2.weight': ln2[i].clone(),
                   p + 'mlp.c_fc.weight': w1[i].clone(), p + 'mlp.c_up.weight': w3[i].clone(), p + 'mlp.c_proj.weight': w2[i].clone()})
    sd['transformer.ln_f.weight'] = lnf.clone()
    sd['lm_head.weight'] = sd['transformer.wte.weight'] if tied else head[0].clone()
    # Meta's rotary pairs adjacent dims (x[0::2], x[1::2]): rope_layout='interleaved' runs the weights as they are
    args = dict(block_size=seq, vocab_size=vocab, n_layer=L, n_head=nh, n_kv_head=nkv, n_embd=dim, mlp_hidden=hidden,
                mlp='swiglu', norm='rmsnorm', norm_eps=1e-5, pos='rope', rope_layout='interleaved', rope_theta=10000.0,
                bias=False, tie_embeddings=tied)
    if tok_path is None:  # llama2.c names custom tokenizers tok<vocab>.bin; the default one is tokenizer.bin
        near = [os.path.join(os.path.dirname(path), n) for n in (f'tok{vocab}.bin', 'tokenizer.bin')]
        tok_path = next((p for p in near if os.path.isfile(p)), None)
    elif not os.path.isfile(tok_path):
        raise FileNotFoundError(f"no such tokenizer file: {tok_path}")
    tok = None
    if tok_path is not None:
        tok = {'tokenizer': 'llama2c', 'path': os.path.abspath(tok_path), 'vocab_size': vocab, 'bos': 1, 'eot': 2}
    return args, sd, tok

# -----------------------------------------------------------------------------
# export


def pick_family(c):
    """The HF family that runs this config: learned positions + LayerNorm + GELU is GPT-2 (GPT-Neo
    when it has local layers or unscaled attention without q/k/v biases); RoPE + RMSNorm + SwiGLU is Llama."""
    if c.norm == 'rmsnorm' and c.pos == 'rope' and c.mlp == 'swiglu':
        return 'llama'
    if c.norm == 'layernorm' and c.pos == 'learned' and c.mlp in ('gelu', 'gelu_tanh'):
        qkv_bias = c.bias if c.qkv_bias is None else c.qkv_bias
        local = any(c.window(i) for i in range(c.n_logical))
        return 'gpt_neo' if local or (c.attn_scale == 1.0 and not qkv_bias) else 'gpt2'
    raise ValueError(f"no Hugging Face family runs norm={c.norm!r} pos={c.pos!r} mlp={c.mlp!r} "
                     "(gpt2/gpt_neo: layernorm + learned + gelu; llama: rmsnorm + rope + swiglu)")


def hf_config(c, family, tok):
    """nanogrow config (merged: no layer_map/adapters/low-rank) -> config.json dict, or a one-line
    error naming the first parameter the family cannot represent."""
    def need(ok, param, value, why):
        if not ok:
            raise ValueError(f"cannot export as {family}: {param}={value!r} ({why})")
    qkv_bias = c.bias if c.qkv_bias is None else c.qkv_bias
    windows = [c.window(i) for i in range(c.n_layer)]
    hd = c.n_embd // c.n_head
    gelu = {'gelu': 'gelu', 'gelu_tanh': 'gelu_new'}
    need(c.norm == ('rmsnorm' if family == 'llama' else 'layernorm'), 'norm', c.norm, f"{family} has the other norm")
    need(c.pos == ('rope' if family == 'llama' else 'learned'), 'pos', c.pos, f"{family} uses the other position encoding")
    need((c.mlp == 'swiglu') == (family == 'llama'), 'mlp', c.mlp, f"{family} has a different MLP")
    bos, eos = (tok or {}).get('bos'), (tok or {}).get('eot')
    common = {'architectures': [{'gpt2': 'GPT2LMHeadModel', 'gpt_neo': 'GPTNeoForCausalLM', 'llama': 'LlamaForCausalLM'}[family]],
              'model_type': family, 'vocab_size': c.vocab_size, 'tie_word_embeddings': c.tie_embeddings,
              'bos_token_id': bos if bos is not None else eos, 'eos_token_id': eos, 'torch_dtype': 'float32'}
    if family == 'llama':
        need(not any(windows), 'attn_window', c.attn_window, 'Llama has no local attention')
        need(c.attn_scale is None or abs(c.attn_scale - hd ** -0.5) < 1e-9, 'attn_scale', c.attn_scale, 'Llama scales by 1/sqrt(head_dim)')
        return {**common, 'hidden_size': c.n_embd, 'intermediate_size': c.mlp_hidden or 4 * c.n_embd,
                'num_hidden_layers': c.n_layer, 'num_attention_heads': c.n_head, 'num_key_value_heads': c.n_kv_head or c.n_head,
                'head_dim': hd, 'hidden_act': 'silu', 'max_position_embeddings': c.block_size, 'rms_norm_eps': c.norm_eps,
                'rope_theta': c.rope_theta, 'attention_bias': bool(qkv_bias or c.bias), 'mlp_bias': c.bias}
    need(c.n_kv_head in (None, c.n_head), 'n_kv_head', c.n_kv_head, f"{family} has no grouped-query attention")
    base = {**common, 'activation_function': gelu[c.mlp], 'layer_norm_epsilon': c.norm_eps}
    if family == 'gpt2':
        need(not any(windows), 'attn_window', c.attn_window, 'GPT-2 has no local attention; use gpt_neo')
        need(c.attn_scale in (None, 1.0) or abs(c.attn_scale - hd ** -0.5) < 1e-9, 'attn_scale', c.attn_scale,
             'GPT-2 scales by 1/sqrt(head_dim) or not at all')
        return {**base, 'n_embd': c.n_embd, 'n_layer': c.n_layer, 'n_head': c.n_head, 'n_positions': c.block_size,
                'n_inner': c.mlp_hidden, 'scale_attn_weights': c.attn_scale != 1.0,
                'attn_pdrop': c.dropout, 'resid_pdrop': c.dropout, 'embd_pdrop': c.dropout}
    need(not qkv_bias, 'qkv_bias', qkv_bias, 'GPT-Neo has no q/k/v biases')
    need(c.attn_scale == 1.0, 'attn_scale', c.attn_scale, 'GPT-Neo does not scale attention scores')
    sizes = sorted({w for w in windows if w})
    need(len(sizes) <= 1, 'attn_window', c.attn_window, 'GPT-Neo has one window_size for all local layers')
    return {**base, 'hidden_size': c.n_embd, 'num_layers': c.n_layer, 'num_heads': c.n_head,
            'max_position_embeddings': c.block_size, 'intermediate_size': c.mlp_hidden,
            'attention_types': [[['local' if w else 'global' for w in windows], 1]], 'window_size': sizes[0] if sizes else 256,
            'attention_dropout': c.dropout, 'resid_dropout': c.dropout, 'embed_dropout': c.dropout}


# -----------------------------------------------------------------------------
# tokenizers: each tokenizer.py kind as a Hugging Face tokenizer.json that encodes to the same ids, and back


def byte_level_alphabet():
    """GPT-2's printable stand-in character for each byte, in which byte-level BPE vocabularies spell their tokens
    (Language Models are Unsupervised Multitask Learners, 2019)."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(shifted)}}


def tiktoken_merges(ranks):
    """tiktoken's ranks (token bytes -> rank) -> the merges, in rank order. tiktoken merges the lowest-ranked pair
    first, so a token's merge is the two parts that BPE with only the lower ranks leaves of it."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        parts = [token[i:i + 1] for i in range(len(token))]
        while len(parts) > 2:
            i = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], rank))
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append(tuple(parts))
    return merges


def hf_tokenizer(meta):
    """tokenizer.py's meta -> (tokenizer.json text, its special tokens for tokenizer_config.json)."""
    from tokenizer import get_tokenizer
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    except ImportError:
        raise ValueError("the tokenizers package is needed to export a tokenizer: pip install tokenizers") from None
    kind = meta.get('tokenizer')
    if kind == 'bpe':  # already a Hugging Face tokenizer
        eot = meta.get('eot')
        return meta['tokenizer_json'], {} if eot is None else {'eos_token': Tokenizer.from_str(meta['tokenizer_json']).id_to_token(eot)}
    t = get_tokenizer(meta)  # raises the project's clear errors (unknown kind, missing files, GPT-2 BPE offline)
    if kind == 'char':  # a BPE without merges: one token per character
        tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(meta['chars'])}, merges=[]))
        tok.decoder = decoders.Fuse()
        return tok.to_str(), {}
    if kind == 'gpt2':
        import tiktoken
        enc = tiktoken.get_encoding('gpt2')
        ranks = {enc.decode_single_token_bytes(i): i for i in range(enc.n_vocab) if i != enc.eot_token}
        spell = byte_level_alphabet()
        word = lambda b: ''.join(spell[x] for x in b)
        tok = Tokenizer(models.BPE(vocab={word(b): i for b, i in ranks.items()},
                                   merges=[(word(a), word(b)) for a, b in tiktoken_merges(ranks)]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split regex, as tiktoken's
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken('<|endoftext|>', special=True)])  # id 50256, after the BPE tokens
        return tok.to_str(), {'bos_token': '<|endoftext|>', 'eos_token': '<|endoftext|>'}
    # llama2c: sentencepiece BPE with byte fallback, as Hugging Face writes Llama tokenizers; '▁' marks a space
    sp = lambda piece: piece.replace(' ', '\u2581')
    names = {t.unk: '<unk>', t.bos: '<s>', t.eot: '</s>'}  # the file stores '\n<s>\n' and '\n</s>\n'
    vocab = {names.get(i) or sp(p.decode('utf-8')): i for i, p in enumerate(t.pieces)}
    # sentencepiece merges the adjacent pair whose merged piece scores highest: every split of a piece into two
    # pieces is a merge, ranked by the piece's score
    by_score = sorted(t.ids, key=lambda p: -t.scores[t.ids[p]])
    merges = [(sp(p[:k]), sp(p[k:])) for p in by_score for k in range(1, len(p)) if p[:k] in t.ids and p[k:] in t.ids]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token='<unk>', fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend('\u2581'), normalizers.Replace(' ', '\u2581')])  # dummy prefix
    tok.decoder = decoders.Sequence([decoders.Replace('\u2581', ' '), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(' ', 1, 0)])
    tok.add_special_tokens([AddedToken(n, special=True, normalized=False) for n in names.values()])
    return tok.to_str(), {'bos_token': '<s>', 'eos_token': '</s>', 'unk_token': '<unk>'}


def tokenizer_files(meta, block_size):
    """The tokenizer files of an export: tokenizer.json, tokenizer_config.json (which also keeps tokenizer.py's meta,
    so that importing the export restores the very same tokenizer; the files of the export stand in for the meta's
    tokenizer_json and llama2c path) and, for llama2c, the tokenizer.bin itself."""
    text, special = hf_tokenizer(meta)
    own = {k: v for k, v in meta.items() if k != 'tokenizer_json' and not (k == 'path' and meta['tokenizer'] == 'llama2c')}
    cfg = {'tokenizer_class': 'PreTrainedTokenizerFast', 'model_max_length': block_size,
           'clean_up_tokenization_spaces': False, **special, 'nanogrow_tokenizer': own}
    files = {'tokenizer.json': text.encode('utf-8'), 'tokenizer_config.json': json.dumps(cfg, indent=2).encode('utf-8')}
    if meta['tokenizer'] == 'llama2c':
        with open(meta['path'], 'rb') as f:
            files['tokenizer.bin'] = f.read()
    return files


def import_tokenizer(d, c, default=None):
    """The tokenizer of a Hugging Face directory as tokenizer.py's meta: a nanogrow export's own meta restored; else
    `default` (GPT-2's BPE for GPT-2 sized models, as data prepared with tiktoken has it); else the tokenizer.json it
    ships as a 'bpe' tokenizer (bos/eot from config.json); else None."""
    cfg_path, json_path = os.path.join(d, 'tokenizer_config.json'), os.path.join(d, 'tokenizer.json')
    own = None
    if os.path.exists(cfg_path):
        try:
            with open(cfg_path, encoding='utf-8') as f:
                own = json.load(f).get('nanogrow_tokenizer')
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{cfg_path}: unreadable ({type(e).__name__})")
        if own is not None:
            from tokenizer import check_meta
            check_meta(own, f"{cfg_path}: nanogrow_tokenizer")
    if own and own.get('tokenizer') == 'llama2c':
        return {**own, 'path': os.path.abspath(os.path.join(d, 'tokenizer.bin'))}
    if own and own.get('tokenizer') != 'bpe':
        return own
    if not own and (default or not os.path.exists(json_path)):
        return default
    with open(json_path, encoding='utf-8') as f:
        text = f.read()
    if own:
        return {**own, 'tokenizer_json': text}
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ValueError(f"{d} ships a tokenizer.json; reading it needs the tokenizers package: pip install tokenizers") from None
    try:
        vocab_size = Tokenizer.from_str(text).get_vocab_size()
    except Exception as e:  # tokenizers raises its own Exception type for malformed files
        raise ValueError(f"{json_path}: not a tokenizer.json tokenizers can read ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    return {'tokenizer': 'bpe', 'tokenizer_json': text, 'vocab_size': vocab_size,
            'bos': c.get('bos_token_id'), 'eot': c.get('eos_token_id')}


def export_hf(model, out_dir, family='auto', dtype='float32', tokenizer=None):
    """Write a GPT (any config) as a HF directory of the given family; returns the family."""
    st = _safetensors()
    if os.path.isdir(out_dir) and set(os.listdir(out_dir)) - set(EXPORT_FILES):
        raise ValueError(f"{out_dir} exists and holds other files; export into a new or empty directory")
    model = model.merged()
    c = model.config
    family = pick_family(c) if family == 'auto' else family
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} (use auto, {', '.join(FAMILIES)})")
    cfg = hf_config(c, family, tokenizer)
    cfg['torch_dtype'] = dtype
    tok_files = tokenizer_files(tokenizer, c.block_size) if tokenizer else {}
    sd = model.state_dict()
    hd, kv = c.n_embd // c.n_head, (c.n_kv_head or c.n_head) * (c.n_embd // c.n_head)
    if family == 'llama' and c.rope_layout == 'interleaved':
        # HF rotates halves: reorder each q/k head's dims (0,2,4,..,1,3,5,..) so pair (2i, 2i+1) becomes (i, i+hd/2)
        perm_head = torch.cat([torch.arange(0, hd, 2), torch.arange(1, hd, 2)])
        perm = lambda n_heads: (torch.arange(n_heads)[:, None] * hd + perm_head).flatten()
        perm_qkv = torch.cat([perm(c.n_head), c.n_embd + perm(kv // hd), c.n_embd + kv + torch.arange(kv)])
        for k in [k for k in sd if k.endswith('attn.c_attn.weight') or k.endswith('attn.c_attn.bias')]:
            sd[k] = sd[k][perm_qkv]
    def hf_has(bias):  # whether the family's model has this bias tensor
        if family == 'llama':
            return cfg['mlp_bias'] if '.mlp.' in bias else cfg['attention_bias']
        return family == 'gpt2' or not bias.endswith('attn.c_attn.bias')  # GPT-Neo: no q/k/v biases
    out = {}
    for nk, hks, how in name_map(family, c.n_layer):
        if nk == 'lm_head.weight' and c.tie_embeddings:
            continue  # HF re-ties it on load
        if nk not in sd:
            if nk.endswith('.bias') and hf_has(nk):
                sd[nk] = torch.zeros(sd[nk[:-4] + 'weight'].shape[0])  # HF has this bias, the model (bias=False) doesn't: zero
            else:
                continue
        t = sd[nk]
        ts = [t.t()] if how == 'T' else t.split([c.n_embd, kv, kv]) if how == 'qkv' else [t]
        for k, x in zip(hks, ts):
            out[k] = x.detach().to(getattr(torch, dtype)).contiguous().clone()
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.export-', dir=parent)
    try:
        st.save_file(out, os.path.join(tmp, 'model.safetensors'), metadata={'format': 'pt'})
        with open(os.path.join(tmp, 'config.json'), 'w') as f:
            json.dump(cfg, f, indent=2)
        if cfg['eos_token_id'] is not None:
            with open(os.path.join(tmp, 'generation_config.json'), 'w') as f:
                json.dump({'bos_token_id': cfg['bos_token_id'], 'eos_token_id': cfg['eos_token_id']}, f, indent=2)
        for fn, data in tok_files.items():
            with open(os.path.join(tmp, fn), 'wb') as f:
                f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp (and safetensors) make private files; an export is for sharing
        for fn in os.listdir(tmp):
            os.chmod(os.path.join(tmp, fn), 0o666 & ~umask)
        if os.path.isdir(out_dir):  # only our own earlier export (checked above): swap it out
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return family

# -----------------------------------------------------------------------------


def main(argv=None):
    ap = ArgumentParser(description=__doc__.split('\n\n')[0].strip(), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    p = sub.add_parser('import', help="hf:<dir or hub name> | llama2c:<model.bin>[,<tokenizer.bin>] -> nanogrow checkpoint")
    p.add_argument('spec')
    p.add_argument('--out', required=True, help='checkpoint path to write (.pt)')
    p = sub.add_parser('export', help='nanogrow checkpoint -> Hugging Face directory')
    p.add_argument('ckpt')
    p.add_argument('--out', required=True, help='directory to write (config.json + model.safetensors)')
    p.add_argument('--family', default='auto', choices=('auto',) + FAMILIES)
    p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16', 'float16'))
    args = ap.parse_args(argv)
    from checkpoint import build_model, load_any, save_checkpoint
    try:
        if args.cmd == 'import':
            check_out_path(args.out, [args.spec])
            ckpt = import_model(args.spec)
            save_checkpoint(ckpt, args.out)
            a, tok = ckpt['model_args'], ckpt['tokenizer']
            print(f"imported {args.spec}: {ckpt['param_counts']['unique']:,} params, n_layer={a['n_layer']} n_embd={a['n_embd']} "
                  f"n_head={a['n_head']}/{a['n_kv_head'] or a['n_head']} block_size={a['block_size']}, "
                  f"tokenizer={tok['tokenizer'] if tok else 'none'} -> {args.out}", file=sys.stderr)
        else:
            check_out_path(args.out, [args.ckpt], directory=True)
            ckpt = load_any(args.ckpt)
            family = export_hf(build_model(ckpt), args.out, args.family, args.dtype, ckpt.get('tokenizer'))
            print(f"exported {args.ckpt} as {family} ({args.dtype}) -> {args.out}", file=sys.stderr)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == '__main__':
    main()
