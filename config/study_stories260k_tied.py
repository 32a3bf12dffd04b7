# Issue #13, part 1: virtual (weight-tied) layers + adapters on a real pretrained model, llama2.c's stories260K
# (5 layers x 64, 260K params), with the base frozen, on TinyStories encoded with its own tokenizer. Arms:
#   tied_lora8 / tied_lora12: the paper-like map (each inner layer repeated) as 8 and 12 logical layers on the 5
#     blocks, weight-tied, a LoRA (r=8, alpha=16, dropout 0.1) per logical layer; only the adapters train;
#   ia3_low / ia3: the 8-layer map with IA3 adapters at a too low (5e-5) and a good (3e-3) lr;
#   untied_lora8: the 8-layer map as real copies (grow.py map, a pre-step), LoRA, copies frozen too: the same
#     function as tied_lora8 from more stored weights (they compute the same function);
#   blockwise_lora10: each block twice in a row, [0,0,1,1,...,4,4] (MobileLLM, 2024, arXiv 2402.14905:
#     immediate block-wise sharing), LoRA;
#   fair: no virtual layers, the base's own weights fine-tuned with as many trainable parameters as tied_lora8
#     (the MLP input and output matrices of the three inner blocks: 66,048 vs 65,792; tests/test_study.py checks it).
# Every arm is measured against `fair`: at equal stored parameters, does depth from virtual layers buy anything?
# The base without training is the reference line:
#   python eval.py ppl llama2c:../shared/models/stories260K/stories260K.bin --data data/tinystories_llama2c --block_size 256
# The layer-map sweep (no training; ~310 maps each: sampled maps keeping the first and last layer, monotone ones,
# maps with no constraint (the control: does keeping the ends matter?) and the growth recipes as maps), 8, 10 and 12
# logical layers:
#   python eval.py sweep llama2c:../shared/models/stories260K/stories260K.bin --data data/tinystories_llama2c
#     --generate keep_ends,monotone,any,methods --length 8 --max_maps 100 --block_size 256 --out results/stories260k_sweep8.csv
#   (the same with --length 10 --out results/stories260k_sweep10.csv and --length 12 --out results/stories260k_sweep12.csv)
#
# Once:  python data/tinystories/prepare.py --input ../shared/data/tinystories/train.txt ../shared/data/tinystories/valid.txt
#          --tokenizer llama2c --tokenizer_path ../shared/models/stories260K/tok512.bin
# Run:   python study.py config/study_stories260k_tied.py --jobs 2
# Table: python study.py config/study_stories260k_tied.py --table   (results/stories260k_tied.csv)
#
# Size and time. Measured 2026-11-30 09:28-09:53 on the shared 2-core machine, OMP_NUM_THREADS=1, by the CPU
# seconds of short runs (30-50 iterations under a CPU-time wrapper; the load average was 8-21 from other sessions,
# so wall time was ~10x CPU time and meant nothing). Per iteration of 16 x 256 tokens: the base (5 layers,
# all trained) 0.47 s, tied LoRA 8 logical layers 0.87 s, 12 logical 1.35 s; IA3 (8) and block-wise (10) estimated
# 0.75 s and 1.1 s; an eval (2 x 20 batches) ~13 iterations' worth; start-up 5 s. Per run (CPU minutes, 300
# iterations, 7 evals): fair 3.1, tied_lora8 5.8, tied_lora12 8.9, ia3_low/ia3 5.0, untied_lora8 5.8, blockwise 7.3:
# 41 per seed. Again 2026-11-30 12:05 beside the growth study's two runs (load 2-3), 20 and 60 iterations: fair
# 0.31 s, tied_lora8 0.80 s, tied_lora12 1.18 s per iteration, an eval ~8 s with LoRA (12 logical layers ~12 s):
# ~34 CPU minutes per seed, 102 for 3 seeds = ~51 minutes with --jobs 2 on two idle cores. The sweeps (eval.py, one
# process, forward only over 16K tokens per map, ~1 s per map, ~310 maps each): ~15 minutes for the three. With
# parts 2 and 3 (~48 and ~51 minutes): ~2.6 hours in all.
name = 'stories260k_tied'
base = 'config/stories260k.py'  # stories260K, 16 x 256 tokens per iteration, evals of 20 fixed val batches
seeds = [1, 2, 3]
scratch = 'fair'

_STEPS = {'max_iters': 300, 'lr_decay_iters': 300}
_LORA = {**_STEPS, 'lora_rank': 8, 'lora_alpha': 16.0, 'lora_dropout': 0.1, 'train_only': 'adapters',
         'learning_rate': 1e-3, 'min_lr': 1e-4}
_IA3 = {**_STEPS, 'ia3': True, 'train_only': 'adapters'}
_MAP8 = [0, 1, 1, 2, 2, 3, 3, 4]
_BASE = 'llama2c:../shared/models/stories260K/stories260K.bin'
arms = {
    'fair': {**_STEPS, 'train_only': r'transformer\.h\.[1-3]\.mlp\.c_(fc|proj)\.'},
    'tied_lora8': {**_LORA, 'layer_map': _MAP8},
    'tied_lora12': {**_LORA, 'layer_map': [0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4]},
    'ia3_low': {**_IA3, 'layer_map': _MAP8, 'learning_rate': 5e-5, 'min_lr': 5e-6},
    'ia3': {**_IA3, 'layer_map': _MAP8, 'learning_rate': 3e-3, 'min_lr': 3e-4},
    'untied_lora8': {**_LORA, 'init_from': '{run}/init.pt', 'before': [  # the model as a .pt once, then the copies
        ('{runs}/stories260K.pt', f"python convert.py import {_BASE} --out {{runs}}/stories260K.pt"),
        ('{run}/init.pt', f"python grow.py --method map --map {','.join(map(str, _MAP8))} --out {{run}}/init.pt "
                          "{runs}/stories260K.pt")]},
    'blockwise_lora10': {**_LORA, 'layer_map': [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]},
}
