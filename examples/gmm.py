"""Fit a Gaussian mixture with scipy's L-BFGS and jitad gradients.

The objective is the GMM log-likelihood of Microsoft's ADBench (and GradBench):
n points in d dimensions, K components, each with a mixing logit alpha_k, a mean
mu_k and a lower-triangular inverse-covariance factor Q_k built from a parameter
row icf_k (log-diagonal first, then the strictly lower part column by column),
a log-sum-exp over components and a Wishart prior on the Q_k. Written twice, as
people write it: vectorized with broadcasting and einsum, and with a Python loop
over the components.

    python examples/gmm.py
"""
import math

import numpy as np
import scipy.optimize
import scipy.special

import jitad


def packed_lower(d):
    """A d×d integer matrix: 1 + the position in icf[d:] of each strictly-lower entry,
    counted column by column (ADBench's order), and 0 on and above the diagonal."""
    cols, rows = np.triu_indices(d, 1)
    where = np.zeros((d, d), dtype=np.int64)
    where[rows, cols] = np.arange(1, len(rows) + 1)
    return where


def wishart_prior(icf, d, gamma, m):
    """ADBench's log Wishart prior on the inverse-covariance factors."""
    K = icf.shape[0]
    n = d + m + 1
    frobenius = np.sum(np.exp(2.0 * icf[:, :d])) + np.sum(icf[:, d:] ** 2)
    out = 0.5 * gamma * gamma * frobenius - m * np.sum(icf[:, :d])
    c = n * d * math.log(gamma / math.sqrt(2.0)) - scipy.special.multigammaln(0.5 * n, d)
    return out - K * c


def gmm_objective(alphas, means, icf, x, gamma, m):
    """The ADBench GMM log-likelihood, vectorized: (n, K, d) broadcasting and einsum."""
    n, d = x.shape
    where = packed_lower(d)
    padded = np.concatenate([np.zeros((alphas.shape[0], 1)), icf[:, d:]], axis=1)
    Q = padded[:, where] + np.exp(icf[:, :d])[:, :, None] * np.eye(d)   # (K, d, d)
    centered = x[:, None, :] - means[None, :, :]                   # (n, K, d)
    Qx = np.einsum("kij,nkj->nki", Q, centered)                     # (n, K, d)
    main = alphas + np.sum(icf[:, :d], axis=1) - 0.5 * np.sum(Qx ** 2, axis=2)
    return (-0.5 * n * d * math.log(2.0 * math.pi)
            + np.sum(scipy.special.logsumexp(main, axis=1))
            - n * scipy.special.logsumexp(alphas)
            + wishart_prior(icf, d, gamma, m))


def gmm_objective_loop(alphas, means, icf, x, gamma, m):
    """The same objective with a Python loop over the K components."""
    n, d = x.shape
    where = packed_lower(d)
    terms = []
    for k in range(alphas.shape[0]):
        Q = np.append(0.0, icf[k, d:])[where] + np.diag(np.exp(icf[k, :d]))
        Qx = (x - means[k]) @ Q.T                                    # (n, d)
        terms.append(alphas[k] + np.sum(icf[k, :d]) - 0.5 * np.sum(Qx ** 2, axis=1))
    main = np.stack(terms, axis=1)                                   # (n, K)
    return (-0.5 * n * d * math.log(2.0 * math.pi)
            + np.sum(scipy.special.logsumexp(main, axis=1))
            - n * scipy.special.logsumexp(alphas)
            + wishart_prior(icf, d, gamma, m))


def make_data(n, d, K, rng):
    """ADBench-style inputs: (alphas, means, icf, x, gamma, m)."""
    alphas = rng.standard_normal(K)
    means = rng.uniform(0.0, 1.0, (K, d))
    icf = rng.uniform(0.0, 1.0, (K, d * (d + 1) // 2))
    x = rng.standard_normal((n, d))
    return alphas, means, icf, x, 1.0, 0


def fit(x, K, rng, objective=gmm_objective, gamma=1.0, m=0):
    """Maximize the log-likelihood with L-BFGS over (alphas, means, icf) flattened."""
    n, d = x.shape
    sizes = [K, K * d, K * d * (d + 1) // 2]
    grad = jitad.jit_grad(objective, argnums=(0, 1, 2))

    def unpack(theta):
        a, mu, q = np.split(theta, np.cumsum(sizes)[:-1])
        return a, mu.reshape(K, d), q.reshape(K, -1)

    def negative(theta):
        value, (ga, gm, gq) = grad.value_and_grad(*unpack(theta), x, gamma, m)
        return -value, -np.concatenate([ga, gm.ravel(), gq.ravel()])

    start = np.concatenate([np.zeros(K), x[rng.choice(n, K, replace=False)].ravel(),
                            np.zeros(sizes[2])])
    result = scipy.optimize.minimize(negative, start, jac=True, method="L-BFGS-B")
    return result, unpack(result.x)


def main():
    rng = np.random.default_rng(0)
    centers = np.array([[-3.0, 0.0], [3.0, 1.0], [0.0, 4.0]])
    x = np.concatenate([c + 0.7 * rng.standard_normal((200, 2)) for c in centers])
    result, (alphas, means, icf) = fit(x, 3, rng)
    print(f"L-BFGS: {result.nit} iterations, log-likelihood {-result.fun:.3f}")
    order = np.argsort(means[:, 0])
    print("fitted means:\n", np.round(means[order], 2))
    print("mixing weights:", np.round(scipy.special.softmax(alphas)[order], 3))


if __name__ == "__main__":
    main()
