"""Handwritten digits: a 64-32-10 tanh/softmax network trained with symback's generated code.

scikit-learn's bundled 8x8 digits (1797 images), standardised, a 75/25 split;
cross-entropy on a softmax output, Adam.  Needs scikit-learn (pip install scikit-learn).
Run: python examples/digits.py
"""
import sys
import time

import numpy as np

import symback as sb

try:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
except ImportError:
    sys.exit("this example needs scikit-learn: pip install scikit-learn")

# %% the data
X, labels = load_digits(return_X_y=True)
Y = np.eye(10)[labels]                                   # one-hot targets
X_train, X_test, Y_train, Y_test = train_test_split(X, Y, test_size=0.25, random_state=0,
                                                    stratify=labels)
mean, std = X_train.mean(axis=0), X_train.std(axis=0) + 1e-8
X_train, X_test = (X_train - mean) / std, (X_test - mean) / std

# %% the network, its formulas, its compiled code
net = sb.mlp([64, 32, 10], activation="tanh", output="softmax", loss="cross_entropy")
t0 = time.perf_counter()
d = sb.derive(net)
model = sb.compile(d)
print(f"derive + compile: {time.perf_counter() - t0:.2f} s")
print("dL/dZ2 =", d.delta("Z2", form="chain"), "  (softmax + cross-entropy: prediction - target, over m)")

# %% training
params = model.init(seed=0)
t0 = time.perf_counter()
history = model.fit(X_train, Y_train, params, epochs=30, lr=0.01, batch_size=32, seed=0,
                     optimizer="adam", validation=(X_test, Y_test))
print(f"30 epochs in {time.perf_counter() - t0:.2f} s; loss {history[0]:.3f} -> {history[-1]:.4f}")

# %% accuracy
def accuracy(X, Y):
    return float(np.mean(model.predict(X, params).argmax(axis=1) == Y.argmax(axis=1)))


train_acc, test_acc = accuracy(X_train, Y_train), accuracy(X_test, Y_test)
print(f"accuracy: training {train_acc:.4f}, test {test_acc:.4f} ({len(X_test)} images)")
assert test_acc > 0.95, test_acc
