"""Hand-written ``@numba.njit`` value-and-gradient functions: the baselines.

Each returns ``(value, grad)`` with ``grad`` shaped like the differentiated
argument (a tuple of gradients when several arguments are differentiated),
written the way a careful person writes them: fused loops, no needless
temporaries, BLAS through ``np.dot`` for matrix products. The ``synthetic``
case's reference is generated (see ``synthetic.py``).
"""

import math

import numba
import numpy as np

LV_STEPS = 200  # RK4 steps of the lotka_volterra_rk4 case (cases.py uses it too)


@numba.njit
def seed(x1, x2):
    """f = log(x1) + x1*x2 - sin(x2)."""
    value = math.log(x1) + x1 * x2 - math.sin(x2)
    return value, (1.0 / x1 + x2, x1 - math.cos(x2))


@numba.njit
def rosen(x):
    """Rosenbrock sum over consecutive pairs, in one fused loop."""
    n = x.shape[0]
    grad = np.zeros(n)
    value = 0.0
    for i in range(n - 1):
        r = x[i + 1] - x[i] * x[i]
        s = 1.0 - x[i]
        value += 100.0 * r * r + s * s
        grad[i] += -400.0 * r * x[i] - 2.0 * s
        grad[i + 1] += 200.0 * r
    return value, grad


@numba.njit
def fill_loop(p, t, y):
    """0.5 * sum((p0 exp(-p1 t) - y)^2) in one loop, gradient wrt p."""
    value, g0, g1 = 0.0, 0.0, 0.0
    for i in range(t.shape[0]):
        e = math.exp(-p[1] * t[i])
        r = p[0] * e - y[i]
        value += r * r
        g0 += r * e
        g1 -= r * p[0] * t[i] * e
    return 0.5 * value, np.array([g0, g1])


@numba.njit
def logreg(w, X, y, lam):
    """mean(logaddexp(0, -y * X@w)) + lam/2 |w|^2, gradient wrt w."""
    n = X.shape[0]
    z = np.dot(X, w)
    loss = 0.0
    for i in range(n):
        t = -y[i] * z[i]
        # logaddexp(0, t) and sigmoid(t), both computed without overflow
        e = math.exp(-abs(t))
        loss += max(t, 0.0) + math.log1p(e)
        sigmoid = 1.0 / (1.0 + e) if t >= 0.0 else e / (1.0 + e)
        z[i] = -y[i] * sigmoid / n  # z now holds d loss / d z
    grad = np.dot(z, X)
    value = loss / n
    for j in range(w.shape[0]):
        value += 0.5 * lam * w[j] * w[j]
        grad[j] += lam * w[j]
    return value, grad


@numba.njit
def mlp(W1, b1, W2, b2, X, Y):
    """mean((tanh(X@W1 + b1) @ W2 + b2 - Y)^2), gradients wrt W1, b1, W2, b2."""
    H = np.dot(X, W1)
    for i in range(H.shape[0]):
        for j in range(H.shape[1]):
            H[i, j] = math.tanh(H[i, j] + b1[j])
    R = np.dot(H, W2)  # residual P - Y, then its adjoint
    scale = 2.0 / R.size
    value = 0.0
    gb2 = np.zeros_like(b2)
    for i in range(R.shape[0]):
        for k in range(R.shape[1]):
            r = R[i, k] + b2[k] - Y[i, k]
            value += r * r
            R[i, k] = scale * r
            gb2[k] += R[i, k]
    gW2 = np.dot(H.T, R)
    A_bar = np.dot(R, W2.T)
    gb1 = np.zeros_like(b1)
    for i in range(A_bar.shape[0]):
        for j in range(A_bar.shape[1]):
            A_bar[i, j] *= 1.0 - H[i, j] * H[i, j]
            gb1[j] += A_bar[i, j]
    gW1 = np.dot(X.T, A_bar)
    return value / R.size, (gW1, gb1, gW2, gb2)


@numba.njit
def _lotka_volterra(p, x, y):
    return p[0] * x - p[1] * x * y, p[3] * x * y - p[2] * y


@numba.njit
def _lotka_volterra_vjp(p, x, y, fx_bar, fy_bar, p_bar):
    """Add (fx_bar, fy_bar)·d f/d p to p_bar; return (fx_bar, fy_bar)·d f/d (x, y)."""
    p_bar[0] += fx_bar * x
    p_bar[1] -= fx_bar * x * y
    p_bar[2] -= fy_bar * y
    p_bar[3] += fy_bar * x * y
    x_bar = fx_bar * (p[0] - p[1] * y) + fy_bar * p[3] * y
    y_bar = -fx_bar * p[1] * x + fy_bar * (p[3] * x - p[2])
    return x_bar, y_bar


@numba.njit
def lotka_volterra_rk4(p, state0, dt, target):
    """RK4 loss and its gradient wrt p by a reverse (adjoint) sweep.

    The forward sweep stores the state after every step; the reverse sweep
    recomputes each step's four stages from the stored state and propagates
    the state adjoint backwards through them, accumulating d loss / d p.
    """
    n_steps = LV_STEPS
    xs = np.empty(n_steps + 1)
    ys = np.empty(n_steps + 1)
    xs[0], ys[0] = state0[0], state0[1]
    for n in range(n_steps):
        x, y = xs[n], ys[n]
        k1x, k1y = _lotka_volterra(p, x, y)
        k2x, k2y = _lotka_volterra(p, x + 0.5 * dt * k1x, y + 0.5 * dt * k1y)
        k3x, k3y = _lotka_volterra(p, x + 0.5 * dt * k2x, y + 0.5 * dt * k2y)
        k4x, k4y = _lotka_volterra(p, x + dt * k3x, y + dt * k3y)
        xs[n + 1] = x + dt / 6.0 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
        ys[n + 1] = y + dt / 6.0 * (k1y + 2.0 * k2y + 2.0 * k3y + k4y)
    dx, dy = xs[n_steps] - target[0], ys[n_steps] - target[1]
    value = dx * dx + dy * dy

    p_bar = np.zeros(4)
    x_bar, y_bar = 2.0 * dx, 2.0 * dy
    for n in range(n_steps - 1, -1, -1):
        x, y = xs[n], ys[n]
        k1x, k1y = _lotka_volterra(p, x, y)
        x2, y2 = x + 0.5 * dt * k1x, y + 0.5 * dt * k1y
        k2x, k2y = _lotka_volterra(p, x2, y2)
        x3, y3 = x + 0.5 * dt * k2x, y + 0.5 * dt * k2y
        k3x, k3y = _lotka_volterra(p, x3, y3)
        x4, y4 = x + dt * k3x, y + dt * k3y
        # adjoints of the stages k1..k4 from x_next = x + dt/6 (k1 + 2k2 + 2k3 + k4)
        k4x_bar, k4y_bar = dt / 6.0 * x_bar, dt / 6.0 * y_bar
        k3x_bar, k3y_bar = dt / 3.0 * x_bar, dt / 3.0 * y_bar
        k2x_bar, k2y_bar = dt / 3.0 * x_bar, dt / 3.0 * y_bar
        k1x_bar, k1y_bar = dt / 6.0 * x_bar, dt / 6.0 * y_bar
        u_bar_x, u_bar_y = _lotka_volterra_vjp(p, x4, y4, k4x_bar, k4y_bar, p_bar)
        x_bar += u_bar_x
        y_bar += u_bar_y
        k3x_bar += dt * u_bar_x
        k3y_bar += dt * u_bar_y
        u_bar_x, u_bar_y = _lotka_volterra_vjp(p, x3, y3, k3x_bar, k3y_bar, p_bar)
        x_bar += u_bar_x
        y_bar += u_bar_y
        k2x_bar += 0.5 * dt * u_bar_x
        k2y_bar += 0.5 * dt * u_bar_y
        u_bar_x, u_bar_y = _lotka_volterra_vjp(p, x2, y2, k2x_bar, k2y_bar, p_bar)
        x_bar += u_bar_x
        y_bar += u_bar_y
        k1x_bar += 0.5 * dt * u_bar_x
        k1y_bar += 0.5 * dt * u_bar_y
        u_bar_x, u_bar_y = _lotka_volterra_vjp(p, x, y, k1x_bar, k1y_bar, p_bar)
        x_bar += u_bar_x
        y_bar += u_bar_y
    return value, p_bar


# --- forward mode and second derivatives (the jvp, hvp and hessian cases) -----

@numba.njit
def rosen_jvp(x, v):
    """Rosenbrock's value and directional derivative along v, in one fused loop."""
    value = 0.0
    tangent = 0.0
    for i in range(x.shape[0] - 1):
        r = x[i + 1] - x[i] * x[i]
        s = 1.0 - x[i]
        value += 100.0 * r * r + s * s
        tangent += (-400.0 * r * x[i] - 2.0 * s) * v[i] + 200.0 * r * v[i + 1]
    return value, tangent


@numba.njit
def rosen_hvp(x, v):
    """Hessian of Rosenbrock times v, in one fused loop (the Hessian is tridiagonal)."""
    n = x.shape[0]
    hv = np.zeros(n)
    for i in range(n - 1):
        hv[i] += (1200.0 * x[i] * x[i] - 400.0 * x[i + 1] + 2.0) * v[i] - 400.0 * x[i] * v[i + 1]
        hv[i + 1] += -400.0 * x[i] * v[i] + 200.0 * v[i + 1]
    return hv


@numba.njit
def rosen_hessian(x):
    """The dense Rosenbrock Hessian."""
    n = x.shape[0]
    h = np.zeros((n, n))
    for i in range(n - 1):
        h[i, i] += 1200.0 * x[i] * x[i] - 400.0 * x[i + 1] + 2.0
        h[i, i + 1] -= 400.0 * x[i]
        h[i + 1, i] -= 400.0 * x[i]
        h[i + 1, i + 1] += 200.0
    return h


@numba.njit
def seed_hessian(x):
    """Hessian of log(x1) + x1*x2 - sin(x2) at x = (x1, x2)."""
    h = np.empty((2, 2))
    h[0, 0] = -1.0 / (x[0] * x[0])
    h[0, 1] = h[1, 0] = 1.0
    h[1, 1] = math.sin(x[1])
    return h
