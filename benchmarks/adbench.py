"""Hand-written ``@numba.njit`` gradients of the three ADBench workloads (the baselines
of the gmm, lstm and ba rows; the user functions are in ``examples/``).

Each is a reverse sweep written out by hand over scalar loops, the way a careful
person writes it; ``ba_jacobian`` gives the Jacobian's nonzero blocks the same way.
"""
import math

import numba
import numpy as np


# --- GMM -----------------------------------------------------------------------

@numba.njit
def _multigammaln(a, p):
    out = 0.25 * p * (p - 1) * math.log(math.pi)
    for j in range(1, p + 1):
        out += math.lgamma(a + 0.5 * (1 - j))
    return out


@numba.njit
def gmm(alphas, means, icf, x, gamma, m):
    """ADBench GMM log-likelihood and its gradient wrt (alphas, means, icf)."""
    n, d = x.shape
    K = alphas.shape[0]
    g_alphas = np.zeros(K)
    g_means = np.zeros((K, d))
    g_icf = np.zeros(icf.shape)
    main = np.empty(K)
    centered = np.empty((K, d))
    Qx = np.empty((K, d))
    diag = np.exp(icf[:, :d])
    sum_qs = np.zeros(K)
    for k in range(K):
        for j in range(d):
            sum_qs[k] += icf[k, j]
    slse = 0.0
    for i in range(n):
        for k in range(K):
            for j in range(d):
                centered[k, j] = x[i, j] - means[k, j]
            sq = 0.0
            for r in range(d):                  # Qx = Q_k (x_i - mu_k), Q_k lower triangular
                s = diag[k, r] * centered[k, r]
                Qx[k, r] = s
            at = d
            for c in range(d):
                for r in range(c + 1, d):
                    Qx[k, r] += icf[k, at] * centered[k, c]
                    at += 1
            for r in range(d):
                sq += Qx[k, r] * Qx[k, r]
            main[k] = alphas[k] + sum_qs[k] - 0.5 * sq
        top = main.max()
        total = 0.0
        for k in range(K):
            main[k] = math.exp(main[k] - top)
            total += main[k]
        slse += top + math.log(total)
        for k in range(K):                      # reverse: p_ik = softmax_k(main_i)
            p = main[k] / total
            g_alphas[k] += p
            for j in range(d):
                g_icf[k, j] += p * (1.0 - Qx[k, j] * centered[k, j] * diag[k, j])
            at = d
            for c in range(d):
                for r in range(c + 1, d):
                    g_icf[k, at] -= p * Qx[k, r] * centered[k, c]
                    at += 1
            for c in range(d):                  # d main / d mu_k = Q_k^T Qx
                s = diag[k, c] * Qx[k, c]
                at = d + c * d - c * (c + 1) // 2
                for r in range(c + 1, d):
                    s += icf[k, at] * Qx[k, r]
                    at += 1
                g_means[k, c] += p * s
    top = alphas.max()
    total = 0.0
    for k in range(K):
        total += math.exp(alphas[k] - top)
    lse_alphas = top + math.log(total)
    for k in range(K):
        g_alphas[k] -= n * math.exp(alphas[k] - lse_alphas)
    # Wishart prior
    nw = d + m + 1
    prior = 0.0
    for k in range(K):
        for j in range(d):
            prior += 0.5 * gamma * gamma * diag[k, j] * diag[k, j] - m * icf[k, j]
            g_icf[k, j] += gamma * gamma * diag[k, j] * diag[k, j] - m
        for j in range(d, icf.shape[1]):
            prior += 0.5 * gamma * gamma * icf[k, j] * icf[k, j]
            g_icf[k, j] += gamma * gamma * icf[k, j]
    prior -= K * (nw * d * math.log(gamma / math.sqrt(2.0)) - _multigammaln(0.5 * nw, d))
    value = -0.5 * n * d * math.log(2.0 * math.pi) + slse - n * lse_alphas + prior
    return value, (g_alphas, g_means, g_icf)


# --- LSTM ----------------------------------------------------------------------

@numba.njit
def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@numba.njit
def lstm(main_params, extra_params, state, sequence):
    """ADBench LSTM loss and its gradient wrt (main_params, extra_params)."""
    layers = state.shape[0] // 2
    b = state.shape[1]
    steps = sequence.shape[0] - 1
    # forward, keeping what the reverse sweep reads: per step and layer the layer's input,
    # the previous hidden and cell, the four gates and tanh of the new cell
    inp = np.empty((steps, layers, b))
    hid = np.empty((steps + 1, layers, b))
    cel = np.empty((steps + 1, layers, b))
    gates = np.empty((steps, layers, 4, b))
    tcell = np.empty((steps, layers, b))
    probs = np.empty((steps, b))
    for l in range(layers):
        hid[0, l] = state[2 * l]
        cel[0, l] = state[2 * l + 1]
    total = 0.0
    for t in range(steps):
        for j in range(b):
            inp[t, 0, j] = sequence[t, j] * extra_params[0, j]
        for l in range(layers):
            w = main_params[2 * l]
            bias = main_params[2 * l + 1]
            for j in range(b):
                x = inp[t, l, j]
                h = hid[t, l, j]
                f = _sigmoid(x * w[j] + bias[j])
                i = _sigmoid(h * w[b + j] + bias[b + j])
                o = _sigmoid(x * w[2 * b + j] + bias[2 * b + j])
                g = math.tanh(h * w[3 * b + j] + bias[3 * b + j])
                c = cel[t, l, j] * f + i * g
                tc = math.tanh(c)
                gates[t, l, 0, j] = f
                gates[t, l, 1, j] = i
                gates[t, l, 2, j] = o
                gates[t, l, 3, j] = g
                tcell[t, l, j] = tc
                cel[t + 1, l, j] = c
                hid[t + 1, l, j] = o * tc
                if l + 1 < layers:
                    inp[t, l + 1, j] = o * tc
        s = 0.0
        for j in range(b):
            probs[t, j] = hid[t + 1, layers - 1, j] * extra_params[1, j] + extra_params[2, j]
            s += math.exp(probs[t, j])
        lse = math.log(s + 2.0)
        for j in range(b):
            total += sequence[t + 1, j] * (probs[t, j] - lse)
            probs[t, j] = math.exp(probs[t, j]) / (s + 2.0)
    count = steps * b
    value = -total / count
    # reverse sweep
    g_main = np.zeros(main_params.shape)
    g_extra = np.zeros(extra_params.shape)
    g_hid = np.zeros((layers, b))     # adjoint of hidden/cell carried to the previous step
    g_cel = np.zeros((layers, b))
    g_x = np.zeros(b)
    scale = -1.0 / count
    for t in range(steps - 1, -1, -1):
        gold_sum = 0.0
        for j in range(b):
            gold_sum += sequence[t + 1, j]
        for j in range(b):                          # d/d ypred of sum(gold * (y - lse))
            gy = scale * (sequence[t + 1, j] - gold_sum * probs[t, j])
            hl = hid[t + 1, layers - 1, j]
            g_extra[1, j] += gy * hl
            g_extra[2, j] += gy
            g_hid[layers - 1, j] += gy * extra_params[1, j]
        for l in range(layers - 1, -1, -1):
            w = main_params[2 * l]
            for j in range(b):
                f = gates[t, l, 0, j]
                i = gates[t, l, 1, j]
                o = gates[t, l, 2, j]
                g = gates[t, l, 3, j]
                tc = tcell[t, l, j]
                gh = g_hid[l, j]
                go = gh * tc
                gc = g_cel[l, j] + gh * o * (1.0 - tc * tc)
                gf = gc * cel[t, l, j]
                gi = gc * g
                gg = gc * i
                g_cel[l, j] = gc * f
                # through the activations to the pre-activations
                af = gf * f * (1.0 - f)
                ai = gi * i * (1.0 - i)
                ao = go * o * (1.0 - o)
                ag = gg * (1.0 - g * g)
                x = inp[t, l, j]
                h = hid[t, l, j]
                g_main[2 * l, j] += af * x
                g_main[2 * l, b + j] += ai * h
                g_main[2 * l, 2 * b + j] += ao * x
                g_main[2 * l, 3 * b + j] += ag * h
                g_main[2 * l + 1, j] += af
                g_main[2 * l + 1, b + j] += ai
                g_main[2 * l + 1, 2 * b + j] += ao
                g_main[2 * l + 1, 3 * b + j] += ag
                g_hid[l, j] = ai * w[b + j] + ag * w[3 * b + j]
                g_x[j] = af * w[j] + ao * w[2 * b + j]
            if l > 0:
                for j in range(b):
                    g_hid[l - 1, j] += g_x[j]
        for j in range(b):
            g_extra[0, j] += g_x[j] * sequence[t, j]
    return value, (g_main, g_extra)


# --- bundle adjustment ---------------------------------------------------------

@numba.njit
def _ba_observation(cam, X, w, feat, seed0, seed1, g_cam, g_X):
    """Residual r = w * (project(cam, X) - feat) of one observation, and the reverse sweep
    of seed0 * r[0] + seed1 * r[1] added into g_cam (11) and g_X (3); returns (r0, r1, g_w)."""
    rot0, rot1, rot2 = cam[0], cam[1], cam[2]
    p0, p1, p2 = X[0] - cam[3], X[1] - cam[4], X[2] - cam[5]
    sq = rot0 * rot0 + rot1 * rot1 + rot2 * rot2
    theta = math.sqrt(sq)
    cos, sin = math.cos(theta), math.sin(theta)
    w0, w1, w2 = rot0 / theta, rot1 / theta, rot2 / theta
    c0, c1, c2 = w1 * p2 - w2 * p1, w2 * p0 - w0 * p2, w0 * p1 - w1 * p0   # w × p
    dot = w0 * p0 + w1 * p1 + w2 * p2
    t = dot * (1.0 - cos)
    y0 = p0 * cos + c0 * sin + w0 * t
    y1 = p1 * cos + c1 * sin + w1 * t
    y2 = p2 * cos + c2 * sin + w2 * t
    u0, u1 = y0 / y2, y1 / y2
    rsq = u0 * u0 + u1 * u1
    L = 1.0 + cam[9] * rsq + cam[10] * rsq * rsq
    f = cam[6]
    e0 = u0 * L * f + cam[7] - feat[0]
    e1 = u1 * L * f + cam[8] - feat[1]
    # reverse
    g_w = seed0 * e0 + seed1 * e1
    ge0, ge1 = seed0 * w, seed1 * w
    g_cam[7] += ge0
    g_cam[8] += ge1
    g_cam[6] += ge0 * u0 * L + ge1 * u1 * L
    gL = ge0 * u0 * f + ge1 * u1 * f
    gu0, gu1 = ge0 * L * f, ge1 * L * f
    g_cam[9] += gL * rsq
    g_cam[10] += gL * rsq * rsq
    grsq = gL * (cam[9] + 2.0 * cam[10] * rsq)
    gu0 += 2.0 * u0 * grsq
    gu1 += 2.0 * u1 * grsq
    gy0, gy1 = gu0 / y2, gu1 / y2
    gy2 = -(gu0 * u0 + gu1 * u1) / y2
    # y = p cos + (w × p) sin + w (w·p)(1 - cos)
    gp0 = gy0 * cos + (gy1 * w2 - gy2 * w1) * sin      # adjoint of w × p: gy × w on p
    gp1 = gy1 * cos + (gy2 * w0 - gy0 * w2) * sin
    gp2 = gy2 * cos + (gy0 * w1 - gy1 * w0) * sin
    gwt = gy0 * w0 + gy1 * w1 + gy2 * w2               # adjoint of t
    gdot = gwt * (1.0 - cos)
    gp0 += gdot * w0
    gp1 += gdot * w1
    gp2 += gdot * w2
    gw0 = gy0 * t + (p1 * gy2 - p2 * gy1) * sin + gdot * p0     # and p × gy on w
    gw1 = gy1 * t + (p2 * gy0 - p0 * gy2) * sin + gdot * p1
    gw2 = gy2 * t + (p0 * gy1 - p1 * gy0) * sin + gdot * p2
    gcos = gy0 * p0 + gy1 * p1 + gy2 * p2 - gwt * dot
    gsin = gy0 * c0 + gy1 * c1 + gy2 * c2
    gtheta = -sin * gcos + cos * gsin
    wg = gw0 * w0 + gw1 * w1 + gw2 * w2                 # w = rot / theta
    gtheta -= wg / theta
    gsq = gtheta / (2.0 * theta)
    g_cam[0] += gw0 / theta + 2.0 * rot0 * gsq
    g_cam[1] += gw1 / theta + 2.0 * rot1 * gsq
    g_cam[2] += gw2 / theta + 2.0 * rot2 * gsq
    g_X[0] += gp0
    g_X[1] += gp1
    g_X[2] += gp2
    g_cam[3] -= gp0
    g_cam[4] -= gp1
    g_cam[5] -= gp2
    return e0 * w, e1 * w, g_w


@numba.njit
def ba(cams, X, w, obs, feats):
    """0.5 * (sum of squared reprojection residuals + sum of squared weight residuals)
    and its gradient wrt (cams, X, w)."""
    g_cams = np.zeros(cams.shape)
    g_X = np.zeros(X.shape)
    g_w = np.zeros(w.shape)
    value = 0.0
    empty = np.zeros(11)
    for i in range(obs.shape[0]):
        c, p = obs[i, 0], obs[i, 1]
        r0, r1, _ = _ba_observation(cams[c], X[p], w[i], feats[i], 0.0, 0.0, empty, empty)
        _, _, gw = _ba_observation(cams[c], X[p], w[i], feats[i], r0, r1, g_cams[c], g_X[p])
        g_w[i] += gw
        value += 0.5 * (r0 * r0 + r1 * r1)
        werr = 1.0 - w[i] * w[i]
        value += 0.5 * werr * werr
        g_w[i] -= 2.0 * werr * w[i]
    return value, (g_cams, g_X, g_w)


@numba.njit
def ba_jacobian(cams, X, w, obs, feats):
    """Nonzero blocks of the Jacobian of the residuals (2 per observation, then 1 per
    weight) wrt (cams, X, w) flattened: (2p, 15) blocks [11 camera, 3 point, 1 weight]
    and the (p,) diagonal of the weight residuals' block."""
    p = obs.shape[0]
    blocks = np.zeros((2 * p, 15))
    for i in range(p):
        c, q = obs[i, 0], obs[i, 1]
        for row in range(2):
            block = blocks[2 * i + row]
            _, _, gw = _ba_observation(cams[c], X[q], w[i], feats[i], 1.0 - row, float(row),
                                       block[:11], block[11:14])
            block[14] = gw
    return blocks, -2.0 * w


@numba.njit
def _ba_csr(cams, X, w, obs, feats):
    """(data, indices, indptr) of the CSR Jacobian of the packed residuals: per observation
    two rows of 14 sorted columns (the camera's but the other coordinate's principal point,
    the point's, the weight), then one row per weight."""
    blocks, diagonal = ba_jacobian(cams, X, w, obs, feats)
    p, n_cams, n_points = obs.shape[0], cams.shape[0], X.shape[0]
    data = np.empty(28 * p + p)
    indices = np.empty(28 * p + p, dtype=np.int64)
    indptr = np.empty(3 * p + 1, dtype=np.int64)
    at = 0
    for r in range(2 * p):
        i = r // 2
        indptr[r] = at
        for k in range(15):
            if k == 8 - r % 2:                  # x depends on cam[7] only, y on cam[8]
                continue
            data[at] = blocks[r, k]
            indices[at] = 11 * obs[i, 0] + k if k < 11 else \
                11 * n_cams + 3 * obs[i, 1] + k - 11 if k < 14 else 11 * n_cams + 3 * n_points + i
            at += 1
    for i in range(p):
        indptr[2 * p + i] = at
        data[at] = diagonal[i]
        indices[at] = 11 * n_cams + 3 * n_points + i
        at += 1
    indptr[3 * p] = at
    return data, indices, indptr


def ba_sparse_jacobian(params, obs, feats, n_cams, n_points):
    """The Jacobian of ``bundle_adjustment.packed_residuals`` as a scipy CSR matrix."""
    import scipy.sparse
    cams = params[:11 * n_cams].reshape(n_cams, 11)
    X = params[11 * n_cams:11 * n_cams + 3 * n_points].reshape(n_points, 3)
    w = params[11 * n_cams + 3 * n_points:]
    data, indices, indptr = _ba_csr(cams, X, w, obs, feats)
    return scipy.sparse.csr_matrix((data, indices, indptr),
                                   shape=(len(indptr) - 1, params.size))
