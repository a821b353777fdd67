"""
From a fit to predictions with uncertainty
==========================================

After a fit: standard errors, which expert produced each observation
(posterior probabilities), predictive intervals and quantiles, and standard
errors by a parametric bootstrap, on a synthetic problem whose truth is known.
"""

import matplotlib.pyplot as plt
import numpy as np

import moelearn
from moelearn.inference import bootstrap_standard_errors

truth = moelearn.make_moe(n_features=3, n_experts=2, noise_std=0.3, random_state=0)
X, y = moelearn.sample(truth, 2_000, random_state=1)
model = moelearn.MixtureOfExpertsRegressor(n_experts=2, random_state=0).fit(X, y)

# %%
# Estimates and standard errors
# -----------------------------
# The experts may come out in any order; :func:`moelearn.parameter_errors`
# matches them to the truth before it measures the error.

print("experts:\n", model.experts_.round(3))
print("standard errors:\n", model.standard_errors(X, y).experts.round(3))
print("matched errors:", moelearn.parameter_errors(model, truth))

# %%
# Posterior probabilities
# -----------------------
# ``predict_gating(X)`` is the prior weight of each expert given ``x``;
# ``predict_responsibilities(X, y)`` the posterior given ``x`` *and* ``y``.
# Most observations are attributed to one expert with high probability.

posterior = model.predict_responsibilities(X, y)
print("prior of the first rows:\n", model.predict_gating(X[:3]).round(3))
print("posterior of the first rows:\n", posterior[:3].round(3))

fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(posterior.max(axis=1), bins=40, color="C0")
ax.set_xlabel("largest posterior probability of a row")
ax.set_ylabel("rows")
fig.tight_layout()
plt.show()

# %%
# Predictive intervals and quantiles
# ----------------------------------
# The predictive distribution of ``y`` given ``x`` is a mixture, often
# bimodal: its central 90% interval can be much wider than
# ``mean +- 1.645 std`` suggests, and it covers about 90% of new draws.

X_new, y_new = moelearn.sample(truth, 5_000, random_state=2)
band = model.predict_interval(X_new, alpha=0.1)
covered = np.mean((band[:, 0] <= y_new) & (y_new <= band[:, 1]))
print(f"coverage of the 90% intervals on new data: {covered:.3f}")
print("quantiles 10/50/90% of the first row:", model.predict_quantiles(X_new[:1], [0.1, 0.5, 0.9]))

# %%
# Bootstrap standard errors
# -------------------------
# The parametric bootstrap draws new targets from the fitted model, refits
# and takes the spread of the estimates: no normal approximation of the
# likelihood.  Here 30 refits, against the observed-information errors.

boot = bootstrap_standard_errors(model, X, n_boot=30, random_state=0)
print("bootstrap:\n", boot.experts.round(3))
