"""The penalty of the penalised (maximum a posteriori) fit, per sample.

A :class:`Penalty` holds the ridges on the standardised expert and gate slopes,
the strength of the gate prior (a Cauchy of scale :data:`GATE_SCALE` on each
centred gate slope, to the power of that strength) and the strength of the
experts' dispersion prior (:meth:`~moelearn.families.Family.dispersion_prior`)
at the family's reference dispersion.  :func:`dispersion_terms` and
:func:`gate_prior_terms` evaluate the two priors for one state or a batch of
candidates, :func:`centred_blocks` gives the gate prior's quadratic minorant
for the M-step.  The likelihood engine and the batched screen share them
(DESIGN §13, "The prior").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "GATE_SCALE",
    "Penalty",
    "as_penalty",
    "centred_blocks",
    "dispersion_terms",
    "gate_prior_terms",
]

# The gate prior's scale on standardised columns: Cauchy(0, 2.5) on inputs scaled to sd 1/2
# (Gelman, Jakulin, Pittau & Su 2008, Annals of Applied Statistics 2, 1360-1383) is
# Cauchy(0, 1.25) on inputs of sd 1.
GATE_SCALE = 1.25


class Penalty(NamedTuple):
    """The engine's penalty per sample: ridges on the slopes, a prior on the dispersions.

    ``expert`` and ``gate`` are the ridges on the standardised slopes;
    ``dispersion`` is the strength per sample of each expert's dispersion prior
    (:meth:`~moelearn.families.Family.dispersion_prior`) at ``reference``, the
    family's reference dispersion in the engine's units; ``gate_prior`` the
    strength per sample of a Cauchy prior of scale ``gate_scale`` on every
    slope of the centred gate (:func:`gate_prior_terms`).  A plain ``alpha``
    (one number, or ``(expert, gate)``) is a ridge alone (:func:`as_penalty`).
    """

    expert: float = 0.0
    gate: float = 0.0
    dispersion: float = 0.0
    reference: float = 1.0
    gate_prior: float = 0.0
    gate_scale: float = GATE_SCALE

    @property
    def active(self) -> bool:
        return self.expert > 0 or self.gate > 0 or self.dispersion > 0 or self.gate_prior > 0


def as_penalty(alpha) -> Penalty:
    """``alpha`` (a number, ``(expert, gate)`` or a :class:`Penalty`) as a :class:`Penalty`."""
    if isinstance(alpha, Penalty):
        return alpha
    if np.ndim(alpha) == 0:
        return Penalty(float(alpha), float(alpha))
    a_e, a_g = alpha
    return Penalty(float(a_e), float(a_g))


def dispersion_terms(family, log_disp, pen: Penalty, n, tied_column=None):
    """The dispersion prior times ``pen.dispersion n`` at ``log_disp`` (..., k, m).

    Returns ``(value (...), gradient (..., k, m), curvature (..., k, m))`` in the
    log-dispersions (the curvature is the negated second derivative, ``>= 0``),
    or None where there is no prior.  A dispersion the ``k`` experts share
    (column ``tied_column``) has weight ``1/k`` on each expert's copy: one prior
    for the one parameter.
    """
    log_disp = np.asarray(log_disp, dtype=float)
    if family is None or pen.dispersion <= 0 or log_disp.size == 0:
        return None
    m = log_disp.shape[-1]
    terms = family.dispersion_prior(log_disp.reshape(-1, m), pen.reference)
    if terms is None:
        return None
    weight = np.full(log_disp.shape[-2:], pen.dispersion * n)
    if tied_column is not None:
        weight[:, tied_column] /= log_disp.shape[-2]
    value, grad, curv = (np.reshape(a, log_disp.shape) * weight for a in terms)
    return value.sum(axis=(-2, -1)), grad, curv


def gate_prior_terms(gate, mask, pen: Penalty, n):
    """The gate's Cauchy prior times ``pen.gate_prior n`` at ``gate`` (..., k, p).

    The prior is ``-((k-1)/k) log(1 + (2c / s)^2)`` on every centred slope ``c``
    (the gate's coefficients of a column less their mean over the ``k`` experts;
    ``mask`` (p,) zero on the intercept), ``s = pen.gate_scale``: with two experts
    exactly a Cauchy prior of scale ``s`` on the log-odds slope (``c = -+v/2``), with
    ``k`` the worth of ``k - 1`` of them, symmetric in the experts.  Heavy-tailed, so a
    steep gate that
    the data support costs a few nats where a Gaussian prior would forbid it, while
    a gate that separates the rows still has a finite maximum (Gelman et al. 2008).
    Returns ``(value (...), gradient, weight, second)`` or None without a prior:
    ``gradient`` (..., k, p) is the derivative in the gate's coefficients (centred
    again: the prior depends on them through their centred form only);
    ``weight`` and ``second`` (..., k, p) are, per centred slope, the curvature of
    the quadratic minorant at ``c`` (``2 / ((s/2)^2 + c^2)`` times the power, positive: the
    M-step's
    majorise-minimise weight) and the prior's exact second derivative, both still
    to be sandwiched between the centring (:func:`centred_blocks`).
    """
    k = gate.shape[-2]
    if pen.gate_prior <= 0 or k < 2:
        return None
    # per centred slope scale s/2 and power (k-1)/k: with two experts, c = -+v/2 and the
    # prior is exactly Cauchy(0, s) on the log-odds slope v; with k, k-1 such priors' worth
    strength, s2 = pen.gate_prior * n * (k - 1) / k, (0.5 * pen.gate_scale) ** 2
    V = gate * mask
    c = V - V.mean(axis=-2, keepdims=True)
    room = s2 + c**2
    value = -strength * np.sum(mask * np.log1p(c**2 / s2), axis=(-2, -1))
    d1 = -2.0 * strength * c / room * mask
    gradient = d1 - d1.mean(axis=-2, keepdims=True)
    weight = 2.0 * strength / room * mask
    second = -2.0 * strength * (s2 - c**2) / room**2 * mask
    return value, gradient, weight, second


def centred_blocks(diag):
    """``J' diag(d) J`` over the free gate rows, for ``d`` (..., k, p) on the centred
    slopes and ``J = (I - 11'/k)[:, :k-1]`` the centring of the free rows (the last
    row is the reference, fixed at zero): shape (..., (k-1) p, (k-1) p), laid out
    row-major over ``(row, column)`` as the gate's flat coordinates."""
    k, p = diag.shape[-2:]
    J = (np.eye(k) - 1.0 / k)[:, : k - 1]
    M = np.einsum("li,...lp,lj->...ipj", J, diag, J)  # (..., k-1, p, k-1)
    full = np.einsum("...ipj,pq->...ipjq", M, np.eye(p))
    return full.reshape(*diag.shape[:-2], (k - 1) * p, (k - 1) * p)
