"""The loss of ADBench's LSTM over a character sequence, and its gradient.

ADBench's model: `layers` LSTM layers of hidden size b (14 in ADBench) whose gate
weights act elementwise, an input and an output scaling, a log-softmax prediction of
the next character at every step. `main_params` holds per layer a weight row and a
bias row of the four gates (2·layers × 4b), `extra_params` the input weight, output
weight and output bias (3 × b), `state` the hidden and cell rows of every layer
(2·layers × b), `sequence` one row per character (steps × b). Written as people
write it: a Python loop over the time steps, 2-D parameter arrays.

    python examples/lstm.py
"""
import numpy as np

import jitad


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_cell(weight, bias, hidden, cell, x):
    b = hidden.shape[0]
    forget = sigmoid(x * weight[:b] + bias[:b])
    ingate = sigmoid(hidden * weight[b:2 * b] + bias[b:2 * b])
    outgate = sigmoid(x * weight[2 * b:3 * b] + bias[2 * b:3 * b])
    change = np.tanh(hidden * weight[3 * b:] + bias[3 * b:])
    cell = cell * forget + ingate * change
    return outgate * np.tanh(cell), cell


def lstm_predict(main_params, extra_params, state, x):
    x = x * extra_params[0]
    new_state = []
    for layer in range(len(state) // 2):
        hidden, cell = lstm_cell(main_params[2 * layer], main_params[2 * layer + 1],
                                 state[2 * layer], state[2 * layer + 1], x)
        new_state += [hidden, cell]
        x = hidden
    return x * extra_params[1] + extra_params[2], new_state


def lstm_objective(main_params, extra_params, state, sequence):
    """ADBench's loss: minus the mean log-probability of each next character (its
    log-sum-exp adds 2 inside the logarithm, as ADBench does)."""
    state = list(state)
    total = 0.0
    for t in range(len(sequence) - 1):
        prediction, state = lstm_predict(main_params, extra_params, state, sequence[t])
        normalized = prediction - np.log(np.sum(np.exp(prediction)) + 2.0)
        total += np.sum(sequence[t + 1] * normalized)
    return -total / ((len(sequence) - 1) * sequence.shape[1])


def make_data(layers, b, length, rng):
    """ADBench-style inputs: (main_params, extra_params, state, sequence), the sequence
    one-hot characters."""
    main_params = rng.uniform(-1.0, 1.0, (2 * layers, 4 * b))
    extra_params = rng.uniform(-1.0, 1.0, (3, b))
    state = rng.uniform(-1.0, 1.0, (2 * layers, b))
    sequence = np.eye(b)[rng.integers(0, b, length)]
    return main_params, extra_params, state, sequence


def main():
    rng = np.random.default_rng(0)
    main_params, extra_params, state, sequence = make_data(2, 14, 6, rng)
    loss = jitad.jit_grad(lstm_objective, argnums=(0, 1))
    for step in range(5):          # a few steps of gradient descent on the parameters
        value, (g_main, g_extra) = loss.value_and_grad(main_params, extra_params, state,
                                                       sequence)
        print(f"step {step}: loss {value:.5f}")
        main_params = main_params - 0.5 * g_main
        extra_params = extra_params - 0.5 * g_extra


if __name__ == "__main__":
    main()
