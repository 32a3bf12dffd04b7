"""convert.py: HF and llama2.c import, HF export, checked against transformers' own forward pass."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import require
from convert import export_hf, import_model
from model import GPT, GPTConfig

TOL = 1e-4  # max abs logit difference, fp32
V = 97


@pytest.fixture
def tf():
    t = require('transformers')
    t.logging.set_verbosity_error()
    return t


def hf_model(tf, name):
    if name == 'gpt2':
        cfg = tf.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64)
        return tf.GPT2LMHeadModel(cfg)
    if name == 'gpt_neo':  # window 4 < the 24-token test sequence, so the local layers really are local
        cfg = tf.GPTNeoConfig(vocab_size=V, hidden_size=32, num_layers=3, num_heads=4, max_position_embeddings=64,
                              attention_types=[[['global', 'local'], 1], [['local'], 1]], window_size=4)
        return tf.GPTNeoForCausalLM(cfg)
    tied = name == 'llama_tied'
    cfg = tf.LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, rope_theta=500.0, max_position_embeddings=64, tie_word_embeddings=tied)
    return tf.LlamaForCausalLM(cfg)


@torch.no_grad()
def randomize(m, seed=0):
    # HF's init gives near-zero logits; perturb everything (LoRA B, IA3 scales too) so differences would show
    g = torch.Generator().manual_seed(seed)
    for p in m.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return m.eval()


def build(ckpt):
    m = GPT(GPTConfig.from_dict(ckpt['model_args']))
    m.load_state_dict(ckpt['model'])
    return m.eval()


@torch.no_grad()
def max_diff(ours, theirs, x):
    return (ours(x)[0] - theirs(x).logits).abs().max().item()


def roundtrip(tf, model, out_dir, family='auto', tokenizer=None):
    """Export, load with transformers, and return the max logit difference to `model`."""
    got = export_hf(model, str(out_dir), family, tokenizer=tokenizer)
    hf = tf.AutoModelForCausalLM.from_pretrained(str(out_dir)).eval()
    x = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    return got, max_diff(model, hf, x)


@pytest.mark.parametrize('name', ['gpt2', 'gpt_neo', 'llama', 'llama_tied'])
def test_hf_import_export_matches_transformers(tf, tmp_path, name):
    hf = randomize(hf_model(tf, name))
    hf.save_pretrained(tmp_path / 'hf')
    ckpt = import_model(f"hf:{tmp_path / 'hf'}")
    m = build(ckpt)
    x = torch.randint(0, V, (2, 24), generator=torch.Generator().manual_seed(1))
    assert max_diff(m, hf, x) <= TOL
    family, diff = roundtrip(tf, m, tmp_path / 'out')
    assert family == {'llama_tied': 'llama'}.get(name, name)
    assert diff <= TOL
    assert json.load(open(tmp_path / 'out' / 'config.json'))['model_type'] == family
    if name == 'gpt_neo':
        assert ckpt['model_args']['attn_window'] == [0, 4, 4] and ckpt['model_args']['attn_scale'] == 1.0


def test_sharded_and_legacy_bin(tf, tmp_path):
    # sharded safetensors with an index
    hf = randomize(hf_model(tf, 'llama'))
    hf.save_pretrained(tmp_path / 'sharded', max_shard_size='20KB')
    assert (tmp_path / 'sharded' / 'model.safetensors.index.json').exists()
    x = torch.randint(0, V, (1, 16))
    assert max_diff(build(import_model(f"hf:{tmp_path / 'sharded'}")), hf, x) <= TOL
    # an old-style GPT-2 pytorch_model.bin: no 'transformer.' prefix, attention-mask buffers saved
    hf = randomize(hf_model(tf, 'gpt2'))
    d = tmp_path / 'old'
    d.mkdir()
    sd = {k.removeprefix('transformer.'): v for k, v in hf.state_dict().items() if k != 'lm_head.weight'}
    sd['h.0.attn.bias'] = torch.ones(1, 1, 64, 64)
    torch.save(sd, d / 'pytorch_model.bin')
    (d / 'config.json').write_text(json.dumps(hf.config.to_dict()))
    assert max_diff(build(import_model(f'hf:{d}')), hf, x) <= TOL


@pytest.mark.parametrize('arch', ['gpt2', 'gpt_neo', 'llama'])
def test_export_tied_lora_ia3_lowrank(tf, tmp_path, arch):
    """Virtual layers + adapters + low-rank factors are merged on export, and transformers agrees."""
    base = dict(vocab_size=V, block_size=64, n_layer=2, n_head=4, n_embd=32, layer_map=[0, 1, 1, 0],
                lora_rank=4, ia3=True)
    extra = {'gpt2': dict(attn_scale=1.0, mlp='gelu', mlp_hidden=48),  # unscaled: scale_attn_weights=false
             'gpt_neo': dict(qkv_bias=False, attn_scale=1.0, attn_window=[0, 4, 0, 4], mlp='gelu_tanh'),
             'llama': dict(norm='rmsnorm', pos='rope', mlp='swiglu', n_kv_head=2, bias=False, rope_layout='interleaved',
                           lowrank_mlp=8, mlp_hidden=48)}[arch]
    m = randomize(GPT(GPTConfig(**base, **extra)))
    assert any(n.endswith('lora_B') for n, _ in m.named_parameters())
    family, diff = roundtrip(tf, m, tmp_path / 'out')
    assert family == arch
    assert diff <= TOL


def test_export_grown_by_duplication(tf, tmp_path):
    hf = randomize(hf_model(tf, 'llama'))
    hf.save_pretrained(tmp_path / 'hf')
    ckpt = import_model(f"hf:{tmp_path / 'hf'}")
    ckpt['model_args']['layer_map'] = [0, 0, 1, 1]  # a 4-layer model on the 2 imported blocks
    m = build(ckpt)
    family, diff = roundtrip(tf, m, tmp_path / 'out')
    assert diff <= TOL
    assert json.load(open(tmp_path / 'out' / 'config.json'))['num_hidden_layers'] == 4


def test_export_bias_free_quick_start_model(tf, repo, tmp_path):
    # the README quick-start model (config/train_shakespeare_char.py: bias=False); GPT-2 and GPT-Neo get zero biases
    scope = {}
    exec((repo / 'config/train_shakespeare_char.py').read_text(), scope)
    shape = {k: scope[k] for k in ('n_layer', 'n_head', 'n_embd', 'block_size', 'bias')}
    assert shape['bias'] is False
    for family, extra in (('gpt2', {}), ('gpt_neo', dict(attn_scale=1.0, attn_window=[0, 8, 0, 8]))):
        m = randomize(GPT(GPTConfig(vocab_size=V, **shape, **extra)))
        got, diff = roundtrip(tf, m, tmp_path / family)
        assert got == family and diff <= TOL


def test_export_unrepresentable(tmp_path):
    m = GPT(GPTConfig(vocab_size=V, block_size=32, n_layer=1, n_head=4, n_embd=16, n_kv_head=2))
    with pytest.raises(ValueError, match='n_kv_head'):
        export_hf(m, str(tmp_path / 'a'), 'gpt2')
    m = GPT(GPTConfig(vocab_size=V, block_size=32, n_layer=1, n_head=2, n_embd=16, pos='rope'))
    with pytest.raises(ValueError, match="pos='rope'"):
        export_hf(m, str(tmp_path / 'b'))
    m = GPT(GPTConfig(vocab_size=V, block_size=32, n_layer=2, n_head=2, n_embd=16, norm='rmsnorm', pos='rope',
                      mlp='swiglu', attn_window=[0, 8]))
    with pytest.raises(ValueError, match='attn_window'):
        export_hf(m, str(tmp_path / 'c'))
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_stories260K(tf, shared, tmp_path):
    from tokenizer import get_tokenizer
    ckpt = import_model(f"llama2c:{shared / 'models/stories260K/stories260K.bin'}")
    a, tok_meta = ckpt['model_args'], ckpt['tokenizer']
    assert (a['n_layer'], a['n_embd'], a['n_head'], a['n_kv_head'], a['mlp_hidden'], a['block_size']) == (5, 64, 8, 4, 172, 512)
    assert tok_meta == {'tokenizer': 'llama2c', 'path': str(shared / 'models/stories260K/tok512.bin'),
                        'vocab_size': 512, 'bos': 1, 'eot': 2}
    m = build(ckpt)
    assert m.param_counts()['unique'] == 260032
    tok = get_tokenizer(tok_meta)
    text = tok.decode(m.generate(torch.tensor([[1]]), 60, temperature=0)[0].tolist())
    assert text == ('\n<s>\nOnce upon a time, there was a little girl named Lily. She loved to play outside in the park. '
                    'One day, she saw a big, red ball. She wanted to play with it, but it was too high'), text
    # loss on the first paragraphs of valid.txt, BOS before each, concatenated, 512-token windows
    paras = [p.strip() for p in (shared / 'data/tinystories/valid.txt').read_text().split('\n\n') if p.strip()][:30]
    ids = torch.tensor([t for p in paras for t in [1] + tok.encode(p)])
    n = (len(ids) - 1) // 512 * 512
    with torch.no_grad():
        _, loss = m(ids[:n].view(-1, 512), ids[1:n + 1].view(-1, 512))
    print(f'stories260K loss on {n} tokens of valid.txt: {loss.item():.4f}')
    assert n == 3072 and abs(loss.item() - 1.3235) < 1e-3  # measured (llama2.c reports 1.297 on the whole split)
    # a frankenmodel: blocks 2,3 run twice; transformers runs the export identically
    ckpt['model_args']['layer_map'] = [0, 1, 2, 3, 2, 3, 4]
    fam, diff = roundtrip(tf, build(ckpt), tmp_path / 'frank', tokenizer=tok_meta)
    assert fam == 'llama' and diff <= TOL


def test_stories260K_grown_with_dus_and_llama_pro_round_trip(tf, shared, tmp_path):
    # grow.py on a real pretrained Llama: the llama_pro export runs exactly what the original's export
    # runs in transformers; dus is not function-preserving, so its loss only has to be finite and worse
    from grow import grow
    from tokenizer import get_tokenizer
    ckpt = import_model(f"llama2c:{shared / 'models/stories260K/stories260K.bin'}")
    text = (shared / 'data/tinystories/valid.txt').read_text()[:4000]
    x = torch.tensor([1] + get_tokenizer(ckpt['tokenizer']).encode(text))[:2 * 256].view(2, 256)
    logits, losses = {}, {}
    for name, method, opts in [('orig', None, {}), ('pro', 'llama_pro', {'every': 1}), ('dus', 'dus', {})]:
        grown = grow([ckpt], method, **opts) if method else ckpt
        fam, diff = roundtrip(tf, build(grown), tmp_path / name)
        assert fam == 'llama' and diff <= TOL
        hf = tf.AutoModelForCausalLM.from_pretrained(str(tmp_path / name)).eval()
        with torch.no_grad():
            out = hf(x, labels=x)
        logits[name], losses[name] = out.logits, out.loss.item()
    assert json.load(open(tmp_path / 'pro' / 'config.json'))['num_hidden_layers'] == 10
    assert json.load(open(tmp_path / 'dus' / 'config.json'))['num_hidden_layers'] == 8
    assert (logits['pro'] - logits['orig']).abs().max() <= 1e-5
    assert losses['orig'] < losses['dus'] < 2 * losses['orig'], losses


def write_hf(tf, d, name='gpt2'):
    hf_model(tf, name).save_pretrained(d)
    return json.loads((d / 'config.json').read_text())


def test_bad_inputs(tf, tmp_path, repo):
    good = tmp_path / 'good'
    write_hf(tf, good)
    cases = {}
    d = tmp_path / 'unknown_type'
    cfg = write_hf(tf, d)
    (d / 'config.json').write_text(json.dumps({**cfg, 'model_type': 'bert'}))
    cases['unknown_type'] = (f'hf:{d}', "unsupported model_type 'bert'")
    d = tmp_path / 'no_weights'
    write_hf(tf, d)
    (d / 'model.safetensors').unlink()
    cases['no_weights'] = (f'hf:{d}', 'no model.safetensors')
    d = tmp_path / 'shape'
    cfg = write_hf(tf, d)
    (d / 'config.json').write_text(json.dumps({**cfg, 'n_inner': 64}))
    cases['shape'] = (f'hf:{d}', 'shape mismatch')
    cases['missing_dir'] = (f'hf:{tmp_path / "nope"}', 'no such directory')
    cases['hub'] = ('hf:nanogrow-no-such-org/no-such-model', 'pass a local directory')
    cases['bad_spec'] = ('gguf:x.bin', 'unknown model spec')
    cases['llama2c_missing'] = (f'llama2c:{tmp_path / "x.bin"}', 'no such file')
    (tmp_path / 'trunc.bin').write_bytes(b'\0' * 10)
    cases['llama2c_short'] = (f'llama2c:{tmp_path / "trunc.bin"}', 'too short')
    for name, (spec, msg) in cases.items():
        with pytest.raises((ValueError, FileNotFoundError), match=msg) as e:
            import_model(spec)
        assert '\n' not in str(e.value), name
    # the CLI: non-zero exit, one 'error:' line, no output file
    for spec, msg in [cases['unknown_type'], cases['shape'], cases['missing_dir']]:
        out = tmp_path / 'x.pt'
        r = subprocess.run([sys.executable, 'convert.py', 'import', spec, '--out', str(out)], cwd=repo,
                           capture_output=True, text=True)
        assert r.returncode != 0 and r.stderr.startswith('error:') and msg in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()
    r = subprocess.run([sys.executable, 'convert.py', 'export', str(tmp_path / 'none.pt'), '--out', str(tmp_path / 'o')],
                       cwd=repo, capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.startswith('error:') and not (tmp_path / 'o').exists()


def test_cli_roundtrip(tf, tmp_path, repo):
    hf = randomize(hf_model(tf, 'gpt_neo'))
    hf.save_pretrained(tmp_path / 'hf')
    run = lambda *a: subprocess.run([sys.executable, 'convert.py', *map(str, a)], cwd=repo, capture_output=True, text=True)
    r = run('import', f"hf:{tmp_path / 'hf'}", '--out', tmp_path / 'neo.pt')
    assert r.returncode == 0, r.stderr
    r = run('export', tmp_path / 'neo.pt', '--out', tmp_path / 'out')
    assert r.returncode == 0, r.stderr
    assert 'gpt_neo' in r.stderr and r.stdout == ''  # a status line, not a result: stderr
    r = run('export', tmp_path / 'neo.pt', '--out', tmp_path / 'out')  # re-export over our own output is fine
    assert r.returncode == 0, r.stderr
    back = tf.AutoModelForCausalLM.from_pretrained(str(tmp_path / 'out')).eval()
    x = torch.randint(0, V, (1, 24))
    with torch.no_grad():
        assert (back(x).logits - hf(x).logits).abs().max().item() <= TOL
    assert sorted(os.listdir(tmp_path)) == ['hf', 'neo.pt', 'out']  # no temp dirs left behind


def tokenizer_case(kind, shared):
    """(meta, encode) for each tokenizer kind, and real text lines for it."""
    from tokenizer import get_tokenizer
    stories = [l for l in (shared / 'data/tinystories/valid.txt').read_text().splitlines() if l.strip()][:3000]
    if kind == 'char':
        text = (shared / 'data/tinyshakespeare/input.txt').read_text()
        chars = sorted(set(text))
        meta = {'tokenizer': 'char', 'vocab_size': len(chars), 'dtype': 'uint16', 'chars': chars, 'path': None, 'eot': None,
                'bos': None, 'source': 'input.txt'}  # a prepare.py meta.json
        lines = text.splitlines()[:3000]
    elif kind == 'gpt2':
        meta, lines = {'tokenizer': 'gpt2', 'vocab_size': 50257, 'eot': 50256, 'bos': None}, stories
    elif kind == 'llama2c':
        meta = {'tokenizer': 'llama2c', 'path': str(shared / 'models/stories260K/tok512.bin'), 'vocab_size': 512, 'bos': 1, 'eot': 2}
        lines = stories
    else:  # a byte-level BPE trained with tokenizers, as data prepared with --vocab_size has
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(stories[1000:], trainers.BpeTrainer(vocab_size=400, special_tokens=['<|endoftext|>'], show_progress=False,
                                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        meta = {'tokenizer': 'bpe', 'tokenizer_json': tok.to_str(), 'vocab_size': tok.get_vocab_size(), 'eot': 0, 'bos': None}
        lines = stories[:1000] + [l + ' café ☃ 日本' for l in stories[:20]]  # unseen text and unseen characters
        return meta, lambda s: tok.encode(s, add_special_tokens=False).ids, lines + ['\n'.join(lines[:100])]
    return meta, get_tokenizer(meta).encode, lines + ['\n'.join(lines[:100])]


@pytest.mark.parametrize('kind', ['char', 'gpt2', 'llama2c', 'bpe'])
def test_export_carries_its_tokenizer(tf, shared, tmp_path, kind):
    """AutoTokenizer loads the export and encodes real text to the project's ids, decodes them back to the text;
    importing the export restores the tokenizer."""
    meta, encode, lines = tokenizer_case(kind, shared)
    out = tmp_path / 'out'
    export_hf(GPT(GPTConfig(vocab_size=meta['vocab_size'], block_size=32, n_layer=1, n_head=2, n_embd=16)), str(out), tokenizer=meta)
    hf_tok = tf.AutoTokenizer.from_pretrained(str(out))
    ids = [encode(line) for line in lines]
    assert hf_tok(lines).input_ids == ids  # the default adds no special tokens, as tokenizer.py's encode
    assert hf_tok.batch_decode(ids) == lines
    back = import_model(f'hf:{out}')['tokenizer']
    if kind == 'llama2c':  # the tokenizer file travels with the export
        assert (out / 'tokenizer.bin').read_bytes() == open(meta['path'], 'rb').read()
        meta = {**meta, 'path': str(out / 'tokenizer.bin')}
    assert back == meta
    if kind == 'bpe':  # a tokenizer.json from elsewhere becomes a 'bpe' tokenizer, bos/eot from config.json
        cfg = json.loads((out / 'tokenizer_config.json').read_text())
        del cfg['nanogrow_tokenizer']
        (out / 'tokenizer_config.json').write_text(json.dumps(cfg))
        assert import_model(f'hf:{out}')['tokenizer'] == {**meta, 'bos': 0}  # GPT-2 style: bos = eos


def test_sample_from_an_export(tf, shared, tmp_path, repo):
    """sample.py --init_from=hf:DIR on an export of stories260K samples what the original does."""
    from convert import main
    model = f"llama2c:{shared / 'models/stories260K/stories260K.bin'}"
    save = tmp_path / 's260k.pt'
    main(['import', model, '--out', str(save)])
    main(['export', str(save), '--out', str(tmp_path / 'hf')])
    outs = []
    for spec in (model, f"hf:{tmp_path / 'hf'}"):
        p = subprocess.run([sys.executable, 'sample.py', f'--init_from={spec}', '--start=Once upon a time', '--num_samples=1',
                            '--max_new_tokens=30', '--temperature=0', '--device=cpu'], cwd=repo, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout)
    assert outs[0] == outs[1] and outs[0].startswith('Once upon a time')


def test_lm_eval_on_an_export_equals_eval_mc(tf, shared, tmp_path, repo):
    """lm-eval-harness (lm_eval --model hf) on an exported stories260K, offline with a local multiple-choice task,
    scores the same items as eval.py mc: same acc and acc_norm, per-choice log-likelihoods within 1e-4."""
    pytest.importorskip('lm_eval')
    import random
    rng = random.Random(0)
    paras = [p.split() for p in (shared / 'data/tinystories/valid.txt').read_text().split('\n\n') if p.strip()]
    words = sorted({w for p in paras[:200] for w in p if w.isalpha()})
    items = []
    for p in paras[:40]:  # context: a story's first words; choices: its next word and three random words
        k = rng.randrange(4, min(20, len(p) - 1))
        choices = [' ' + w for w in [p[k]] + rng.sample([w for w in words if w != p[k]], 3)]
        rng.shuffle(choices)
        items.append({'context': ' '.join(p[:k]), 'choices': choices, 'label': choices.index(' ' + p[k])})
    (tmp_path / 'items.jsonl').write_text(''.join(json.dumps(i) + '\n' for i in items))
    (tmp_path / 'task').mkdir()
    (tmp_path / 'task' / 'nanogrow_mc.yaml').write_text(f"""task: nanogrow_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tmp_path / 'items.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    ckpt = import_model(f"llama2c:{shared / 'models/stories260K/stories260K.bin'}")
    export_hf(build(ckpt), str(tmp_path / 'hf'), tokenizer=ckpt['tokenizer'])
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', 'HF_DATASETS_OFFLINE': '1',
           'HF_DATASETS_CACHE': str(tmp_path / 'datasets')}
    p = subprocess.run([sys.executable, '-m', 'lm_eval', '--model', 'hf', '--model_args', f"pretrained={tmp_path / 'hf'},dtype=float32",
                        '--tasks', 'nanogrow_mc', '--include_path', str(tmp_path / 'task'), '--device', 'cpu', '--batch_size', '8',
                        '--output_path', str(tmp_path / 'results'), '--log_samples'], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    theirs = json.loads(next((tmp_path / 'results').rglob('results_*.json')).read_text())['results']['nanogrow_mc']
    samples = sorted((json.loads(l) for l in next((tmp_path / 'results').rglob('samples_*.jsonl')).open()), key=lambda s: s['doc_id'])
    p = subprocess.run([sys.executable, 'eval.py', 'mc', f"hf:{tmp_path / 'hf'}", '--file', str(tmp_path / 'items.jsonl'),
                        '--json', '--device=cpu', '--dtype=float32'], cwd=repo, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    ours = json.loads(p.stdout)
    assert len(samples) == ours['n'] == 40
    for s, pred in zip(samples, ours['predictions']):
        assert max(abs(float(r[0][0]) - lp) for r, lp in zip(s['resps'], pred['logprobs'])) <= TOL
    assert theirs['acc,none'] == ours['acc'] and theirs['acc_norm,none'] == ours['acc_norm']
    assert ours['acc'] > 0.5  # the model knows its stories: chance is 0.25
