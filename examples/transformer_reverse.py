"""A small causal transformer, derived and compiled by symback, learns to reverse digit strings.

Each sequence is n digits, a separator, then the digits reversed: 3 1 4 1 | 1 4 1 3.
The model reads the first 2n tokens (the last is never an input) and predicts, at every
position, the next token of the reversed half; on the n input positions it copies the
token it reads (a target it can know: the digits themselves are random).  Tokens and
positions are one-hot (inputs=(T, V + T)), so a single attention layer can look up
"the digit at position 2n − 1 − t".  Held-out sequences are never seen in training.

Network: Dense(32) → TransformerBlock(2 heads, hidden 64, causal) → LayerNorm →
Dense(V, softmax), cross-entropy; symback derives every gradient (attention's softmax,
layer norm, GELU) and trains with its generated NumPy code, Adam.
Run: python examples/transformer_reverse.py
"""
import os
import time

# The matrices here are small (64·8 rows × 32 columns): BLAS threads cost more in start-up
# and contention than they save, badly so on a busy machine; set before NumPy loads BLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import symback as sb  # noqa: E402

N_DIGITS = 4
SEP = 10                       # the separator's token; digits are 0..9
V = 11                         # vocabulary
T = 2 * N_DIGITS               # positions read by the model


# %% the data: every string of N_DIGITS digits, split 85/15 into training and held-out
def encode(strings):
    """(inputs (n, T, V+T), targets (n, T, V)) for digit strings (n, N_DIGITS)."""
    n = len(strings)
    full = np.concatenate([strings, np.full((n, 1), SEP), strings[:, ::-1]], axis=1)   # 2n+1 tokens
    tokens = full[:, :T]
    targets = np.concatenate([tokens[:, :N_DIGITS], full[:, N_DIGITS + 1:]], axis=1)   # copy, then next
    X = np.concatenate([np.eye(V)[tokens], np.broadcast_to(np.eye(T), (n, T, T))], axis=2)
    return X, np.eye(V)[targets]


rng = np.random.default_rng(0)
strings = np.array(np.unravel_index(rng.permutation(10 ** N_DIGITS), (10,) * N_DIGITS)).T
split = int(0.85 * len(strings))
X_train, Y_train = encode(strings[:split])
X_test, Y_test = encode(strings[split:])
print(f"{len(X_train)} training and {len(X_test)} held-out sequences, e.g.",
      " ".join(map(str, strings[split])), "|", " ".join(map(str, strings[split][::-1])))

# %% the network, derived once, compiled to NumPy
net = sb.Sequential(sb.Dense(32), sb.TransformerBlock(heads=2, hidden=64, causal=True), sb.LayerNorm(),
                    sb.Dense(V, "softmax"), inputs=(T, V + T), loss="cross_entropy")
t0 = time.perf_counter()
model = sb.compile(sb.derive(net))
print(f"derive + compile: {time.perf_counter() - t0:.1f} s; parameters:", ", ".join(model.params))

# %% training
EPOCHS = 8
params = model.init(seed=0)
t0 = time.perf_counter()
history = model.fit(X_train, Y_train, params, epochs=EPOCHS, lr=3e-3,
                    batch_size=64, seed=0, optimizer="adam")
train_s = time.perf_counter() - t0
print(f"{EPOCHS} epochs in {train_s:.1f} s; loss {history[0]:.3f} -> {history[-1]:.4f}")


# %% accuracy on the reversed half (the positions that predict the output tokens)
def accuracy(X, Y):
    """Fraction of output tokens predicted right, and of sequences reversed without error."""
    right = model.predict(X, params)[:, N_DIGITS:].argmax(axis=-1) == Y[:, N_DIGITS:].argmax(axis=-1)
    return float(right.mean()), float(right.all(axis=1).mean())


(train_acc, _), (test_acc, test_seq) = accuracy(X_train, Y_train), accuracy(X_test, Y_test)
example = model.predict(X_test[:1], params)[0, N_DIGITS:].argmax(axis=-1)
print("held-out", " ".join(map(str, strings[split])), "->", " ".join(map(str, example)))
print(f"token accuracy: training {train_acc:.4f}, held-out {test_acc:.4f} "
      f"({test_seq:.4f} of held-out strings reversed exactly)")
assert test_acc >= 0.95, test_acc
print("transformer reversal reproduced")
