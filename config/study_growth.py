# "Does growth pay?" as a study (README): the growth operators against training the 8-layer model from scratch,
# each over three seeds (a seed sets the init and the data order). study.py runs every (arm, seed) as
#   python train.py config/shakespeare_grow.py --out_dir=runs/growth/<arm>/s<seed> --seed=<seed> <the arm's keys>
# and compare.py measures each run against the scratch run of the same seed.
# $ python study.py config/study_growth.py --jobs 2       (each run takes 5-7 minutes on one CPU core)
# $ python compare.py --from_csv results/growth.csv       (the table again, from the committed per-run summary)
name = 'growth'
base = 'config/shakespeare_grow.py'  # 4 layers for 250 iterations, grown to 8, then the scratch run's 1,200
seeds = [1, 2, 3]
losses = [2.2, 2.1, 2.0]  # target val losses in the table, besides each scratch run's final loss
scratch = 'scratch'
arms = {
    'scratch': {'n_layer': 8, 'grow_at_iter': 0, 'max_iters': 1200},
    'stack': {'grow_method': 'stack', 'grow_options': {'factor': 2}},  # G_stack: the whole model twice
    'interleave': {'grow_method': 'interleave', 'grow_options': {'factor': 2}},  # each layer twice in place
    'llama_pro': {'grow_method': 'llama_pro', 'grow_options': {'every': 1}},  # G_zero: exact function
    'random': {'grow_method': 'random', 'grow_options': {'every': 1}},  # G_random
    'lesa': {'grow_method': 'lesa', 'grow_options': {'lesa_range': '1:4'}},  # 4 -> 7 layers (between neighbours)
}
