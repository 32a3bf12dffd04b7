# How over-sized is the 8-layer target of "Does growth pay?" (config/study_growth.py)? Scratch models of width 128
# and 1-8 layers, each trained from scratch for the FLOPs of the study's scratch arm (8 x 128 for 800 iterations of
# 16 x 64 tokens, 8.44e12 FLOPs), the lr schedule spanning each run, on the same data stream and eval batches.
#
# Run:   python study.py config/study_oversized.py --jobs 2
# Table: python compare.py --from_csv results/oversized.csv     (sp at L*: against the 8-layer run's final loss)
name = 'oversized'
base = 'config/shakespeare_grow.py'
seeds = [1, 2, 3]
scratch = 'L8'

from model import GPT, GPTConfig


def _fpt(n_layer):
    return GPT(GPTConfig(n_layer=n_layer, n_head=4, n_embd=128, block_size=64, vocab_size=65, bias=False)).flops_per_token()


def _arm(n_layer):
    n = round(800 * _fpt(8) / _fpt(n_layer))  # the 8-layer run's FLOPs
    return {'n_layer': n_layer, 'grow_at_iter': 0, 'max_iters': n, 'lr_decay_iters': n, 'eval_interval': 100, 'eval_iters': 20}


arms = {f'L{n}': _arm(n) for n in (8, 6, 4, 2, 1)}
