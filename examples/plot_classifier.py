"""
A mixture of logistic regressions
=================================

:class:`~moelearn.MixtureOfExpertsClassifier` mixes logistic experts (two
classes) or multinomial experts (more) with a softmax gate.  Here the class
boundary turns at ``x0 = 0``: one linear boundary cannot follow it, two
gated logistic experts can.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import moelearn

rng = np.random.default_rng(0)
X = rng.uniform(-3, 3, size=(1_500, 2))
boundary = np.where(X[:, 0] < 0, X[:, 1] - X[:, 0], X[:, 1] + X[:, 0])
labels = np.where(rng.random(1_500) < 1 / (1 + np.exp(-4 * boundary)), "up", "down")
X_train, X_test, y_train, y_test = train_test_split(X, labels, random_state=0)

clf = moelearn.MixtureOfExpertsClassifier(n_experts=2, random_state=0).fit(X_train, y_train)
logistic = LogisticRegression().fit(X_train, y_train)
print("classes:", clf.classes_)
print(f"accuracy: mixture {clf.score(X_test, y_test):.3f}, "
      f"logistic regression {logistic.score(X_test, y_test):.3f}")
print("BIC, one expert against two:",
      round(moelearn.MixtureOfExpertsClassifier(1).fit(X_train, y_train).bic(X_train, y_train), 1),
      round(clf.bic(X_train, y_train), 1))

# %%
# The probability of ``"up"`` over the plane, and the gate's choice of expert
# (its boundary, where both experts weigh 0.5, is the dashed line).

u = np.linspace(-3, 3, 200)
grid = np.array(np.meshgrid(u, u)).reshape(2, -1).T
proba = clf.predict_proba(grid)[:, list(clf.classes_).index("up")].reshape(200, 200)
gate = clf.predict_gating(grid)[:, 0].reshape(200, 200)

fig, ax = plt.subplots(figsize=(6, 5))
image = ax.contourf(u, u, proba, levels=20, cmap="RdBu_r")
ax.contour(u, u, gate, levels=[0.5], colors="k", linestyles="--")
ax.scatter(*X_test.T, c=np.where(y_test == "up", "C3", "C0"), s=5, alpha=0.6)
fig.colorbar(image, label='P(y = "up" | x)')
ax.set_xlabel("x0")
ax.set_ylabel("x1")
fig.tight_layout()
plt.show()
