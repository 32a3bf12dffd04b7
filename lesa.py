"""
LESA (Learnable LLM Layer Scaling-Up, 2025, arXiv 2502.13794): new layers predicted from their neighbours.
grow.py's `lesa` method inserts the layers lesa_layers() predicts; svd() is also tie's truncated SVD.
"""
import contextlib

import torch
import torch.nn as nn
from torch.nn import functional as F
from tqdm import tqdm


@contextlib.contextmanager
def one_thread():
    """For the SVDs and LESA's small matmuls. On the 2-core machine we measured on, a second intra-op
    thread made them slower whenever anything else ran: eigh 768x768 0.04 s vs 5 s, a predictor step
    16 ms vs 840 ms, even a 1024x1024 matmul 14 vs 22 ms."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def svd(W, rank=None):
    """Thin SVD W = US @ Vh (singular values descending; only the top `rank` if given) through the
    eigendecomposition of the smaller Gram matrix: on CPU LAPACK's SVD of wide matrices is 10-50x
    slower, and W is still reproduced to fp32 round-off (US @ Vh = U U^T W with U orthonormal). The
    Gram matrix is scaled to unit RMS weights first: small weights (std 0.02) drove eigh into
    denormal floats, 10-20x slower."""
    W = W.float()
    n = min(W.shape) if rank is None else rank
    wide = W.shape[0] <= W.shape[1]
    with one_thread():
        G = W @ W.T if wide else W.T @ W
        c2 = (G.diagonal().sum() / W.numel()).clamp_min(1e-30)  # mean square weight
        lam, E = torch.linalg.eigh(G.div_(c2))
        E = E[:, -n:].flip(1)
        if wide:  # E = U: US = U S, Vh = U^T W / S
            S = lam[-n:].flip(0).clamp_min(0).mul_(c2).sqrt_()
            return E * S, (E.T @ W).div_(S.clamp_min(S[0] * 1e-12 + 1e-30)[:, None])
        return W @ E, E.T  # E = V: US = W V


def matrix_types(args):
    """LESA's matrix types for our blocks: (name, state-dict suffix, row slice). q, k and v are row
    slices of the fused c_attn; SwiGLU has c_fc (gate) and c_up."""
    hd = args['n_embd'] // args['n_head']
    q, kv = args['n_head'] * hd, (args['n_kv_head'] or args['n_head']) * hd
    types = [('q', 'attn.c_attn.weight', slice(0, q)), ('k', 'attn.c_attn.weight', slice(q, q + kv)),
             ('v', 'attn.c_attn.weight', slice(q + kv, q + 2 * kv)), ('o', 'attn.c_proj.weight', slice(None)),
             ('fc', 'mlp.c_fc.weight', slice(None)), ('proj', 'mlp.c_proj.weight', slice(None))]
    if args['mlp'] == 'swiglu':
        types.insert(5, ('up', 'mlp.c_up.weight', slice(None)))
    return types


def fit_predictor(V, hidden, epochs, lr, batch, lam, max_rows, bar):
    """LESA's G_W on V [r, L, in] (layer l's coefficients V[:, l]): samples are the rows k of the layer
    triples t, input (V[k, t-1], V[k, t+1]), target V[k, t]; batches are gathered on the fly rather
    than materialising the (L-2)*r x 3*in data. MLP 2*in -> hidden -> hidden -> in (ReLU); loss
    (1-lam) MSE + lam (|out| - |Y|)^2 with norms over the whole batch, which keeps predictions from
    shrinking toward the mean. Each epoch draws at most max_rows samples. The net lives on V's device;
    bar (tqdm) advances by one per epoch and shows the loss."""
    r, L, n_in = V.shape
    net = nn.Sequential(nn.Linear(2 * n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                        nn.Linear(hidden, n_in)).to(V.device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    with one_thread(), torch.enable_grad():  # small matmuls
        for _ in range(epochs):
            for idx in torch.randperm((L - 2) * r)[:max_rows].split(batch):
                k, t = idx % r, idx // r + 1
                out, y = net(torch.cat([V[k, t - 1], V[k, t + 1]], dim=1)), V[k, t]
                loss = (1 - lam) * F.mse_loss(out, y) + lam * (out.norm() - y.norm()) ** 2
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            bar.set_postfix(loss=f"{loss.item():.4g}")
            bar.update()
    return net.requires_grad_(False), loss.item()


def lesa_layers(layers, args, lo, hi, lam, epochs, hidden, lr, batch, max_rows, device='cpu', progress=False):
    """LESA (Learnable LLM Layer Scaling-Up, 2025, arXiv 2502.13794): per matrix type, SVD of all layers'
    weights side by side, W = [W_0 .. W_L-1] = (U S) [V_0 .. V_L-1]; an MLP learns V_i from (V_i-1, V_i+1);
    a new layer between layers i-1 and i gets (U S) G(V_i-1, V_i). Norm gains and biases are not in
    the SVD; new layers take the mean of their two neighbours (LESA's code copies layer 0's, which
    ignores the same layer-to-layer continuity the method relies on). grow.py's defaults are LESA's (10 epochs,
    batch 64, AdamW 1e-3, lambda 5e-4, hidden 256) except that each epoch sees at most max_rows
    rows (samples) per matrix type: all rows of a 12x768 model for 10 epochs are ~3.5e12 FLOPs,
    minutes on 2 CPU cores; small models (<= 2048 rows) are unaffected.
    layers: the source's per-layer {suffix: tensor}; a new layer goes before each layer lo..hi-1.
    device: where the SVDs and the predictors run (the new layers come back to the sources' device);
    progress: a tqdm bar over all predictors' epochs, with the loss, on a terminal.
    -> ({i: the new layer's tensors}, per matrix type the predictor's loss and norm ratios)."""
    L = len(layers)
    types = matrix_types(args)
    matrices = {key for _, key, _ in types}
    new = {i: {k: (layers[i - 1][k] + layers[i][k]) / 2 for k in layers[i] if k not in matrices} for i in range(lo, hi)}
    predicted = {i: {} for i in new}
    stats = {}
    bar = tqdm(total=len(types) * epochs, desc='lesa', unit='epoch', disable=None if progress else True, leave=False,
               dynamic_ncols=True)
    for name, key, rows in types:
        bar.set_description(f"lesa {name}")
        W = torch.cat([layer[key][rows] for layer in layers], dim=1).to(device)
        n_in = W.shape[1] // L
        US, Vh = svd(W)
        del W
        V = Vh.reshape(-1, L, n_in)  # V[:, l]: layer l's coefficients in the shared basis US
        net, loss = fit_predictor(V, hidden, epochs, lr, batch, lam, max_rows, bar)
        ratios = []
        for i in new:
            W = US @ net(torch.cat([V[:, i - 1], V[:, i]], dim=1))
            predicted[i].setdefault(key, []).append(W.to(layers[i][key].device))
            ratios.append(2 * W.norm().item() / (layers[i - 1][key][rows].norm().item() + layers[i][key][rows].norm().item()))
        stats[name] = dict(loss=round(loss, 6), norm_ratio=[round(r, 4) for r in ratios])
        del US, Vh, V
    bar.close()
    for i, parts in predicted.items():
        for key, ws in parts.items():
            new[i][key] = torch.cat(ws).to(layers[i][key].dtype)  # q|k|v back into c_attn
    return new, stats
