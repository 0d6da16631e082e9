"""Optional peers: JAX and autograd versions of the benchmark cases.

Both libraries need ``numpy``/``math`` calls rewritten against their own
NumPy module (``xp`` below); cases written with arithmetic and indexing
only (``rosen_loop``, ``lotka_volterra_rk4``) are used unchanged.
"""

import synthetic


def peer_function(case, size, xp):
    """``case``'s user function written against the NumPy-like module ``xp``."""
    if case.name == "seed":
        return lambda x1, x2: xp.log(x1) + x1 * x2 - xp.sin(x2)
    if case.name in ("rosen_vec", "rosen_vec_hvp", "rosen_vec_jvp"):
        return lambda x: xp.sum(
            100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    if case.name == "logreg":
        def logreg(w, X, y, lam):
            z = X @ w
            return xp.mean(xp.logaddexp(0.0, -y * z)) + 0.5 * lam * xp.dot(w, w)
        return logreg
    if case.name == "mlp":
        def mlp(W1, b1, W2, b2, X, Y):
            H = xp.tanh(X @ W1 + b1)
            return xp.mean((H @ W2 + b2 - Y) ** 2)
        return mlp
    if case.name == "synthetic":
        return synthetic.user_function(size, math_module=xp)
    if case.name == "seed_hessian":
        return lambda x: xp.log(x[0]) + x[0] * x[1] - xp.sin(x[1])
    if case.name in ("rosen_loop", "lotka_volterra_rk4", "rosen_loop_hvp",
                     "rosen_loop_hessian"):
        return case.fun
    raise KeyError(f"no peer version of case {case.name!r}")


def jax_value_and_grad(case, size):
    """``jax.jit(jax.value_and_grad(...))`` of the case, in float64."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    return jax.jit(jax.value_and_grad(peer_function(case, size, jnp),
                                      argnums=case.argnums))


def jax_derivative(case, size):
    """``jax.jit`` of JAX's counterpart of a derivative row, in float64: ``jax.hessian``;
    ``jax.jvp`` (value and directional derivative); an HVP as ``jax.jvp`` of ``jax.grad``
    (forward over reverse, as JAX's documentation recommends)."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    fun = peer_function(case, size, jnp)
    if case.derivative == "hessian":
        return jax.jit(jax.hessian(fun, argnums=case.argnums))
    if case.derivative == "jvp":
        return jax.jit(lambda x, v: jax.jvp(fun, (x,), (v,)))
    if case.derivative == "hvp":
        return jax.jit(lambda x, v: jax.jvp(jax.grad(fun), (x,), (v,))[1])
    raise KeyError(f"no JAX version of the {case.derivative} of {case.name!r}")


def autograd_value_and_grad(case, size):
    """``autograd.value_and_grad`` of the case; tuple argnums are packed.

    autograd differentiates one argument, so for several the function is
    rewritten to take them as one tuple (autograd differentiates tuples).
    """
    import autograd
    import autograd.numpy as anp

    fun = peer_function(case, size, anp)
    if isinstance(case.argnums, int):
        return autograd.value_and_grad(fun, case.argnums)

    def packed(diff_args, *other_args):
        args = list(other_args)
        for i, arg in sorted(zip(case.argnums, diff_args)):
            args.insert(i, arg)
        return fun(*args)

    packed_value_and_grad = autograd.value_and_grad(packed)

    def value_and_grad(*args):
        diff = tuple(args[i] for i in case.argnums)
        other = [a for i, a in enumerate(args) if i not in case.argnums]
        return packed_value_and_grad(diff, *other)

    return value_and_grad
