"""device.choose: validation, explicit dtypes, and the CPU's auto choice (capability gate, probe,
cache). The capability and the probe are mocked: these tests check decisions, never timings."""
import json

import pytest
import torch

import device


@pytest.fixture
def cpu(monkeypatch, tmp_path):
    """A CPU with native bf16 whose probe reports `speedup`; counts probe calls; cache in tmp_path."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    monkeypatch.delenv('NANOGROW_CPU_BF16', raising=False)
    state = {'native': 'avx512_bf16', 'speedup': 2.0, 'probed': []}
    monkeypatch.setattr(device, 'cpu_native_bf16', lambda: state['native'])

    def probe(width):
        state['probed'].append(width)
        return 1.0, 1.0 / state['speedup']
    monkeypatch.setattr(device, 'probe_bf16', probe)
    return state


def test_native_and_faster_picks_bf16_and_caches(cpu, tmp_path):
    p = device.choose('cpu', 'auto', width=384)
    assert (p.device, p.device_type, p.dtype, p.ptdtype) == ('cpu', 'cpu', 'bfloat16', torch.bfloat16)
    assert cpu['probed'] == [512] and 'measured now' in p.reason
    cache = json.loads((tmp_path / 'nanogrow' / 'cpu_bf16.json').read_text())
    [entry] = cache.values()
    assert entry['512']['speedup'] == 2.0
    # same bucket (384 and 512 share it): a cache hit, no second probe
    cpu['speedup'] = 0.5
    p = device.choose('cpu', 'auto', width=500)
    assert p.dtype == 'bfloat16' and cpu['probed'] == [512] and 'cached probe' in p.reason
    # another bucket: a miss, probed and added beside the first
    p = device.choose('cpu', 'auto', width=128)
    assert p.dtype == 'float32' and cpu['probed'] == [512, 128]
    [entry] = json.loads((tmp_path / 'nanogrow' / 'cpu_bf16.json').read_text()).values()
    assert set(entry) == {'512', '128'}


def test_cache_is_per_machine(cpu, monkeypatch):
    device.choose('cpu', 'auto', width=256)
    monkeypatch.setattr(device, 'machine_key', lambda native: 'another CPU | torch 9')
    device.choose('cpu', 'auto', width=256)
    assert cpu['probed'] == [256, 256]


def test_sampling_on_cpu_stays_float32(cpu):
    p = device.choose('cpu', 'auto', width=512, sampling=True)
    assert p.dtype == 'float32' and 'sampling' in p.reason and cpu['probed'] == []
    assert device.choose('cpu', 'bfloat16', sampling=True).dtype == 'bfloat16'  # explicit still wins


def test_near_tie_stays_float32(cpu):
    cpu['speedup'] = 1.01
    assert device.choose('cpu', 'auto', width=64).dtype == 'float32'


def test_emulated_bf16_picks_float32_without_probing(cpu, tmp_path):
    cpu['native'] = ''
    p = device.choose('cpu', 'auto', width=768)
    assert p.dtype == 'float32' and 'no native bf16' in p.reason
    assert cpu['probed'] == [] and not (tmp_path / 'nanogrow').exists()


def test_env_overrides(cpu, monkeypatch):
    monkeypatch.setenv('NANOGROW_CPU_BF16', 'off')
    assert device.choose('cpu', width=512).dtype == 'float32'
    monkeypatch.setenv('NANOGROW_CPU_BF16', 'on')
    cpu['speedup'] = 0.5
    assert device.choose('cpu', width=512).dtype == 'bfloat16' and cpu['probed'] == []
    cpu['native'] = ''  # 'on' never turns on emulated bf16
    assert device.choose('cpu', width=512).dtype == 'float32'
    cpu['native'] = 'amx_bf16'
    monkeypatch.setenv('NANOGROW_CPU_BF16', 'auto')
    assert device.choose('cpu', width=512).dtype == 'float32' and cpu['probed'] == [512]
    cpu['speedup'] = 3.0  # 'probe' re-measures despite the cache and updates it
    monkeypatch.setenv('NANOGROW_CPU_BF16', 'probe')
    assert device.choose('cpu', width=512).dtype == 'bfloat16' and cpu['probed'] == [512, 512]
    monkeypatch.setenv('NANOGROW_CPU_BF16', 'auto')
    assert device.choose('cpu', width=512).dtype == 'bfloat16' and cpu['probed'] == [512, 512]
    monkeypatch.setenv('NANOGROW_CPU_BF16', 'yes')
    with pytest.raises(ValueError, match='NANOGROW_CPU_BF16'):
        device.choose('cpu')


def test_bad_cache_file_is_a_miss(cpu, tmp_path):
    path = tmp_path / 'nanogrow' / 'cpu_bf16.json'
    path.parent.mkdir()
    for junk in ('{not json', '[1, 2]', '{"k": {"512": {"speedup": "fast"}}}'):
        path.write_text(junk)
        cpu['probed'].clear()
        assert device.choose('cpu', width=512).dtype == 'bfloat16' and cpu['probed'] == [512]
        assert json.loads(path.read_text())  # rewritten as valid JSON


def test_explicit_dtype_is_used_as_given(cpu):
    cpu['native'] = ''
    p = device.choose('cpu', 'bfloat16')
    assert p.dtype == 'bfloat16' and p.reason == 'dtype bfloat16 as requested' and cpu['probed'] == []
    with p.autocast():
        assert torch.is_autocast_enabled('cpu') and torch.get_autocast_dtype('cpu') == torch.bfloat16
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    p = device.choose('cpu', 'float32')
    with p.autocast():
        assert not torch.is_autocast_enabled('cpu')


def test_auto_device_on_a_cpu_only_machine(cpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: False)
    assert device.choose(width=64).device == 'cpu'
    with pytest.raises(ValueError, match='CUDA'):
        device.choose('cuda:1')
    with pytest.raises(ValueError, match='MPS'):
        device.choose('mps')


@pytest.mark.parametrize('args, match', [(('gpu',), 'device'), (('cuda:x',), 'device'), ((None,), 'device'),
                                         (('cpu', 'foo'), 'dtype'), (('cpu', 'fp16'), 'dtype'),
                                         (('cpu', 'auto', 0), 'width'), (('cpu', 'auto', 2.5), 'width')])
def test_bad_values_raise_one_line(args, match):
    with pytest.raises(ValueError, match=match) as e:
        device.choose(*args)
    assert '\n' not in str(e.value)


def test_width_buckets():
    assert [device.width_bucket(w) for w in (1, 64, 65, 128, 384, 512, 4096, None)] == [64, 64, 128, 128, 512, 512, 512, 512]


def test_probe_runs_and_restores_threads():
    threads = torch.get_num_threads()
    fp32_s, bf16_s = device.probe_bf16(64, tokens=16, min_rounds=1, max_rounds=1)
    assert fp32_s > 0 and bf16_s > 0 and torch.get_num_threads() == threads
