"""configurator.py: the nanoGPT config contract with checked keys and types."""
import pytest

from configurator import resolve

DEFAULTS = dict(batch_size=12, learning_rate=6e-4, compile=False, init_from='scratch', layer_map=None,
                grow_options={}, lowrank_attn=0, out_dir='out')


def test_configurator_types_and_values():
    cfg, explicit = resolve(DEFAULTS, ['--batch_size=32', '--learning_rate=1', '--compile=true', '--init_from=hf:a=b=c',
                                       '--layer_map=[0,1,1]', '--grow_options={"n_layer": 8}'], types={'lowrank_attn': object})
    assert cfg['batch_size'] == 32 and cfg['learning_rate'] == 1.0 and isinstance(cfg['learning_rate'], float)
    assert cfg['compile'] is True and cfg['init_from'] == 'hf:a=b=c'  # '=' inside a value
    assert cfg['layer_map'] == [0, 1, 1] and cfg['grow_options'] == {'n_layer': 8}
    assert explicit == ['batch_size', 'learning_rate', 'compile', 'init_from', 'layer_map', 'grow_options']
    assert resolve(DEFAULTS, ['--layer_map=None', '--compile=False', '--lowrank_attn=inc:4:32'],
                   types={'lowrank_attn': object})[0] == {**DEFAULTS, 'lowrank_attn': 'inc:4:32'}
    for bad in ('--batch_size=3.5', '--batch_size=True', '--compile=1', '--learning_rate=fast', '--batch_size'):
        with pytest.raises(ValueError):
            resolve(DEFAULTS, [bad])


def test_configurator_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="unknown config key 'lerning_rate'.*did you mean 'learning_rate'"):
        resolve(DEFAULTS, ['--lerning_rate=1e-3'])
    good = tmp_path / 'good.py'
    good.write_text("import math\nbatch_size = 2 ** 4\nlearning_rate = 1\nlayer_map = [i % 2 for i in range(batch_size // 4)]\n")
    cfg, explicit = resolve(DEFAULTS, [str(good), '--batch_size=8'])
    assert (cfg['batch_size'], cfg['learning_rate'], cfg['layer_map']) == (8, 1.0, [0, 1, 0, 1])
    bad = tmp_path / 'bad.py'
    bad.write_text("batch_size = 4\nbatch_szie = 8\n")
    with pytest.raises(ValueError, match="batch_szie.*bad.py.*did you mean 'batch_size'"):
        resolve(DEFAULTS, [str(bad)])
    bad.write_text("compile = 'yes'\n")
    with pytest.raises(ValueError, match="expected bool"):
        resolve(DEFAULTS, [str(bad)])


