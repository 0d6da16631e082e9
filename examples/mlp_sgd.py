"""Train a 2-layer tanh MLP on a synthetic regression task with plain gradient descent."""
import numpy as np

import jitad


@jitad.jit_grad(argnums=(0, 1, 2, 3))
def mlp(W1, b1, W2, b2, X, Y):
    H = np.tanh(X @ W1 + b1)
    P = H @ W2 + b2
    return np.mean((P - Y) ** 2)


def main(steps=500, batch=256, learning_rate=0.2):
    rng = np.random.default_rng(0)
    inputs, hidden, outputs = 8, 32, 2
    X_all = rng.standard_normal((4096, inputs))
    Y_all = np.stack([np.sin(X_all[:, 0]) * X_all[:, 1], np.cos(X_all[:, 2] + X_all[:, 3])], 1)
    params = [rng.standard_normal((inputs, hidden)) / np.sqrt(inputs), np.zeros(hidden),
              rng.standard_normal((hidden, outputs)) / np.sqrt(hidden), np.zeros(outputs)]
    for step in range(steps + 1):
        rows = rng.integers(0, len(X_all), batch)
        loss, grads = mlp.value_and_grad(*params, X_all[rows], Y_all[rows])
        params = [p - learning_rate * g for p, g in zip(params, grads)]
        if step % 100 == 0:
            print(f"step {step:4d}  minibatch loss {loss:.4f}")
    full = mlp.value(*params, X_all, Y_all)
    print(f"full-data loss {full:.4f}; traces: {mlp.trace_count}, compiles: {mlp.compile_count}")


if __name__ == "__main__":
    main()
