"""
Poisson experts with an exposure offset
=======================================

Counts observed over different exposures (hours of observation, population
at risk) are modelled with the log-exposure as an *offset*: a column that
enters every expert's log-rate with coefficient one, instead of a feature
with a fitted slope.  Here two groups of rows follow different rate curves
in a dose, the mixing weights are constant (``gating_features=[]``, the
classical mixture of Poisson regressions), and the exposure varies from row
to row.
"""

import matplotlib.pyplot as plt
import numpy as np

import moelearn

rng = np.random.default_rng(0)
n = 600
dose = rng.uniform(0, 10, n)
hours = rng.uniform(1, 8, n)
first = rng.random(n) < 0.4
log_rate = np.where(first, 0.5 - 0.1 * dose, -0.5 + 0.15 * dose)
visits = rng.poisson(hours * np.exp(log_rate))

X = np.c_[dose, np.log(hours)]  # column 1 is the log-exposure
model = moelearn.MixtureOfExpertsRegressor(
    n_experts=2, family="poisson", gating_features=[], offset=1, random_state=0
).fit(X, visits)

# %%
# The log-rate slopes and intercepts per expert, and the mixing weights
# (the same for every row, since the gate reads no column).  The truth is
# (-0.1, 0.5) with weight 0.4 and (0.15, -0.5) with weight 0.6.

print("slopes:", model.experts_.ravel().round(3))
print("intercepts:", model.expert_bias_.round(3))
print("weights:", model.predict_gating(X[:1]).round(3))

# %%
# Rates per hour along the dose
# -----------------------------
# Dividing the counts by the exposure puts every row on the scale of a rate
# per hour; the lines are each expert's fitted rate at one hour of exposure
# (log-exposure 0).

grid = np.linspace(0, 10, 100)
rates = model.predict_experts(np.c_[grid, np.zeros_like(grid)])
fig, ax = plt.subplots(figsize=(7, 4))
ax.scatter(dose, visits / hours, s=8, c="0.5", alpha=0.5, label="counts / hours")
for i in range(rates.shape[1]):
    ax.plot(grid, rates[:, i], lw=2, label=f"expert {i}")
ax.set_xlabel("dose")
ax.set_ylabel("rate per hour")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# Predictive intervals are integers: the quantiles of the mixture of Poisson
# distributions at each row's exposure.

print(model.predict_interval(X[:5], alpha=0.1))
