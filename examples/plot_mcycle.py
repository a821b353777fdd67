"""
A mixture of regressions on the motorcycle data
===============================================

The ``mcycle`` data (head acceleration against time after a simulated
motorcycle impact, 133 rows) is the classical test of a mixture of experts:
the curve has flat, falling and rising stretches and the noise changes along
it.  This example chooses the number of experts by BIC, reads the
coefficient table, and plots the experts, the gate and the predictive band.

Needs the ``data`` extra (``pip install "moelearn[data]"``).
"""

import matplotlib.pyplot as plt

import moelearn
from moelearn.plot import plot_criterion, plot_experts, plot_gating

X, y = moelearn.datasets.load_mcycle()  # X: time (ms), y: acceleration (g)
print(X.shape, y.shape)

# %%
# Choose the number of experts
# ----------------------------
# Every candidate is fitted on all the rows and scored by BIC (lower is
# better).  ``random_state`` makes the start search, and so the answer,
# reproducible.  BIC falls steeply up to four experts, is nearly flat from
# four to five and rises at six: the choice lies inside the candidates, not
# at their edge.

selection = moelearn.select_n_experts(X, y, candidates=range(1, 7), random_state=0)
print("chosen:", selection.n_experts)
plot_criterion(selection)
plt.show()

# %%
# The fitted model
# ----------------
# ``summary`` gives the estimates with standard errors from the observed
# information, Wald tests, the noise levels and the information criteria.

model = selection.estimator
print(model.summary(X, y))

# %%
# Experts, gate and predictive band
# ---------------------------------
# Each line is one expert's mean, the dashed line the mixture mean
# ``E[y | x]`` and the grey band the 90% predictive interval of the mixture;
# the points are coloured by their most probable expert.  Below, the gating
# probabilities show which expert answers where.

fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
plot_experts(model, X, y, ax=top)
plot_gating(model, X, ax=bottom)
fig.tight_layout()
plt.show()
