"""Generalized linear models over every site's rows, by Newton-Raphson on exact sums (`Total`).

The families here use their canonical links (gaussian identity, binomial logit, poisson log),
for which Newton's step is IRLS's: beta += (X'WX)^-1 X'(y - mu), with W the variance of each
row's fitted mean. Each site sums its rows' share of X'WX, of the score X'(y - mu) and of the
deviance, so one `total` per iteration gives every site the same pooled quantities, and the
same next beta: the fit is the one statsmodels would make on the pooled rows.

Before iterating, one `total` of counts: the rows (and the sites that have any), the outcome's
sum (the start value and the null model), rows whose outcome the family cannot take, rows with
an infinite value, and a fingerprint of the model (every site must have built the same). Every
decision (an error, convergence, separation) is taken on sums, which every site receives alike:
the sites call `total` the same number of times and stop together. Only what a message shows
may be local (this site's columns).
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, gammaln, xlogy
from scipy.stats import norm

from node.analytics import Total
from node.analytics.design import Design
from node.errors import AnalyticsError

EPS = np.finfo(np.float64).eps  # weights' floor (as statsmodels): X'WX stays invertible
BOUNDARY = 1e-4  # a fitted probability (or Poisson mean) this near 0 (or 1) heads for the edge
MOVING = 0.1  # a row whose linear predictor still moves this much per step once the deviance
# has converged heads for the edge: its coefficients diverge, the fit is separated
ALIASED = 1e-10  # a column whose share unexplained by the earlier ones is below this is aliased
INTERCEPT = "Intercept"  # formulaic's name for the constant column

Array = np.ndarray


@dataclass(frozen=True)
class _Family:
    name: str
    link: str
    mean: Callable[[Array], Array]  # linear predictor -> fitted mean
    weight: Callable[[Array], Array]  # fitted mean -> its variance, IRLS's weight
    deviance: Callable[[Array, Array], Array]  # (y, linear predictor) -> unit deviances
    loglike: Callable[[Array, Array], Array]  # (y, linear predictor) -> log-likelihood, scale 1
    invalid: Callable[[Array], Array]  # y -> rows the family cannot take
    rule: str  # what `invalid` refuses, for the message
    start: Callable[[float], float]  # the outcome's mean -> the intercept's start
    boundary: Callable[[Array], Array]  # fitted mean -> rows at the parameter space's edge


def _binomial_weight(mu: Array) -> Array:
    p = np.clip(mu, EPS, 1 - EPS)
    return p * (1 - p)


def _binomial_deviance(y: Array, eta: Array) -> Array:
    # -2 log-likelihood of a 0/1 outcome, stable for any eta: log(1 + e^t) = logaddexp(0, t)
    return 2 * (y * np.logaddexp(0, -eta) + (1 - y) * np.logaddexp(0, eta))


def _poisson_mean(eta: Array) -> Array:
    return np.exp(np.minimum(eta, 700.0))  # finite: a secure sum cannot carry inf


def _never(values: Array) -> Array:
    return np.zeros(values.shape, dtype=bool)


FAMILIES = {
    "gaussian": _Family(
        name="gaussian",
        link="identity",
        mean=lambda eta: eta,
        weight=np.ones_like,
        deviance=lambda y, eta: (y - eta) ** 2,
        loglike=lambda y, eta: np.zeros_like(y),  # concentrated: taken from the deviance
        invalid=_never,
        rule="",
        start=lambda mean: mean,
        boundary=_never,
    ),
    "binomial": _Family(
        name="binomial",
        link="logit",
        mean=expit,
        weight=_binomial_weight,
        deviance=_binomial_deviance,
        loglike=lambda y, eta: -_binomial_deviance(y, eta) / 2,
        invalid=lambda y: (y != 0) & (y != 1),
        rule="0 or 1",
        start=lambda mean: float(np.log(mean / (1 - mean))),
        boundary=lambda mu: (mu < BOUNDARY) | (mu > 1 - BOUNDARY),
    ),
    "poisson": _Family(
        name="poisson",
        link="log",
        mean=_poisson_mean,
        weight=lambda mu: np.maximum(mu, EPS),
        deviance=lambda y, eta: 2 * (xlogy(y, y) - y * eta - y + _poisson_mean(eta)),
        loglike=lambda y, eta: y * eta - _poisson_mean(eta) - gammaln(y + 1),
        invalid=lambda y: (y < 0) | (y != np.floor(y)),
        rule="a count: a whole number, 0 or more",
        start=lambda mean: float(np.log(mean)),
        boundary=lambda mu: mu < BOUNDARY,
    ),
}

TABLE_COLUMNS = ["covariate", "coef", "se", "z", "p", "ci_low", "ci_high"]


@dataclass(frozen=True, eq=False)
class GLMResult:
    """A fitted model, the same at every site. `table()` has a row per coefficient."""

    formula: str
    family: str
    link: str
    outcome: str
    names: list[str]
    coef: Array
    se: Array
    z: Array
    p: Array  # two-sided, from the normal distribution (as statsmodels' GLM)
    ci_low: Array  # 95% Wald interval
    ci_high: Array
    deviance: float
    null_deviance: float  # of the model with the intercept only (statsmodels' definition)
    pearson_chi2: float
    llf: float  # statsmodels' GLM llf (gaussian: at the scale RSS / n)
    aic: float  # -2 llf + 2 (df_model + 1), as statsmodels' GLM
    scale: float  # gaussian: Pearson chi2 / df_resid; 1 otherwise
    n: int
    df_model: int
    df_resid: int
    iterations: int  # Newton steps' sums (one `total` each), after the first sum of counts
    converged: bool
    sites: int  # sites with at least one complete row
    warnings: list[str]

    def table(self) -> list[dict[str, Any]]:
        """A row per coefficient, keyed by `TABLE_COLUMNS` (for a terminal table or a CSV)."""
        columns = zip(self.coef, self.se, self.z, self.p, self.ci_low, self.ci_high, strict=True)
        return [
            {"covariate": name, **dict(zip(TABLE_COLUMNS[1:], map(_number, row), strict=True))}
            for name, row in zip(self.names, columns, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain numbers, None where a value is not finite."""
        return {
            "formula": self.formula,
            "family": self.family,
            "link": self.link,
            "outcome": self.outcome,
            "coefficients": self.table(),
            **{
                k: _number(getattr(self, k))
                for k in ("deviance", "null_deviance", "pearson_chi2", "llf", "aic", "scale")
            },
            **{k: getattr(self, k) for k in ("n", "df_model", "df_resid", "iterations", "sites")},
            "converged": self.converged,
            "warnings": list(self.warnings),
        }


async def fit_glm(
    design: Design, family: str, total: Total, *, max_iter: int = 100, tol: float = 1e-10
) -> GLMResult:
    """Fit `design` (this site's rows) with every site's, by one `total` of counts and then one
    per Newton step, until the pooled deviance changes by at most `tol` relative to itself
    (``|dev - previous| <= tol * (|dev| + 0.1)``, so a deviance near 0 also converges).

    `AnalyticsError` names the cause: an unknown family, sites that built different models,
    infinite values, an outcome the family cannot take, too few rows, a singular design (the
    columns involved) or separation (the covariates whose coefficients diverge). Running out of
    iterations is not an error: `converged` is False and `warnings` says so."""
    fam = FAMILIES.get(family)
    if fam is None:
        raise AnalyticsError(f"unknown family {family!r}; the families are {', '.join(FAMILIES)}")
    if max_iter < 2:
        raise AnalyticsError(f"max_iter is {max_iter}: convergence compares two deviances")
    p = len(design.names)
    census = _Census(await total(_census(design, fam)))
    census.check(design, fam)
    mean_y = census.y_sum / census.n
    beta = np.zeros(p)
    if INTERCEPT in design.names:
        beta[design.names.index(INTERCEPT)] = fam.start(mean_y)
    null_eta = np.full(design.rows_used, fam.start(mean_y))  # the intercept-only model's

    previous, last_dev, scales = beta, np.inf, np.ones(p)
    converged, iterations = False, 0
    while True:
        iterations += 1
        step = _Step(await total(_step(design, fam, beta, previous, null_eta)), p)
        if iterations == 1:
            _check_rank(step.information, design.names)
            scales = np.sqrt(np.diag(step.information))  # ~ each column's size, for naming
        converged = bool(abs(step.deviance - last_dev) <= tol * (abs(step.deviance) + 0.1))
        if converged or iterations >= max_iter:
            break
        previous, last_dev = beta, step.deviance
        beta = beta + _solve(step.information, step.score, iterations)

    if converged and step.moving:
        raise AnalyticsError(_separation(design, fam, step, (beta - previous) * scales, census.n))
    warnings = []
    if not converged:
        change = abs(step.deviance - last_dev) / (abs(step.deviance) + 0.1)
        heading = ""
        if step.moving:  # separation, perhaps: more iterations would tell
            heading = f"; {step.moving} rows' fitted values still head for 0 (or 1)"
        warnings.append(
            f"did not converge in {max_iter} iterations: the deviance still changed by "
            f"{change:.2g} (relative) in the last one{heading}; the estimates are the last "
            "iterate's"
        )
    return _result(design, fam, census, step, beta, iterations, converged, warnings)


# --------------------------------------------------------------------------- the first sum


def _fingerprint(design: Design, fam: _Family) -> Array:
    """Two 26-bit integers from the model's columns: a sum of integers is exact in float64."""
    text = "\n".join([fam.name, design.outcome, *design.names]).encode()
    digest = hashlib.sha256(text).digest()
    return np.array([int.from_bytes(digest[i : i + 4], "big") >> 6 for i in (0, 4)], float)


def _census(design: Design, fam: _Family) -> Array:
    finite = np.isfinite(design.y) & np.isfinite(design.x).all(axis=1)
    y = design.y[finite]
    return np.array(
        [
            1.0,  # this site
            float(design.rows_used > 0),
            *_fingerprint(design, fam),
            len(y),
            y.sum(),
            fam.invalid(y).sum(),
            (~finite).sum(),
        ]
    )


class _Census:
    def __init__(self, sums: Array) -> None:
        (self.sites, self.with_rows, fa, fb, n, self.y_sum, invalid, infinite) = sums
        self.fingerprint = np.array([fa, fb])
        self.n, self.invalid, self.infinite = int(n), int(invalid), int(infinite)

    def check(self, design: Design, fam: _Family) -> None:
        """Refuse, at every site alike, what cannot be fitted. A site whose fingerprint is not
        the sites' mean differs from some other; with 52 random bits, all then see it."""
        if not np.array_equal(self.fingerprint, self.sites * _fingerprint(design, fam)):
            raise AnalyticsError(
                f"the sites built different models of {design.formula!r} ({fam.name}); this "
                f"site's columns: {', '.join(design.names)}. A categorical coding of a numeric "
                "column, C(x), takes its levels from each site's rows: give them, as in "
                "C(x, levels=[0, 1])"
            )
        if self.infinite:
            infinite = ~np.isfinite(design.x).all(axis=0)
            here = [c for c, bad in zip(design.names, infinite, strict=True) if bad]
            if not np.isfinite(design.y).all():
                here.insert(0, design.outcome)
            where = f" (at this site: {', '.join(here)})" if here else ""
            raise AnalyticsError(
                f"{self.infinite} rows have an infinite value in {design.formula!r}{where}, "
                "e.g. the log of 0 or a division by 0"
            )
        if self.invalid:
            raise AnalyticsError(
                f"{fam.name} needs an outcome that is {fam.rule}: {design.outcome} is not, in "
                f"{self.invalid} of {self.n} rows"
            )
        p = len(design.names)
        if self.n <= p:
            raise AnalyticsError(
                f"{self.n} complete rows over all sites for {p} coefficients: a fit needs more "
                f"rows than coefficients ({design.formula!r})"
            )
        constant = {"binomial": (0, self.n), "poisson": (0,)}.get(fam.name, ())
        if self.y_sum in constant:
            value = 0 if self.y_sum == 0 else 1
            raise AnalyticsError(
                f"{design.outcome} is {value} in every one of the {self.n} rows: it is "
                f"perfectly predicted, and a {fam.name} model has nothing to estimate"
            )


# --------------------------------------------------------------------------- each step


def _step(design: Design, fam: _Family, beta: Array, previous: Array, null_eta: Array) -> Array:
    """This site's share of one Newton step at `beta`."""
    x, y = design.x, design.y
    eta = x @ beta
    mu = fam.mean(eta)
    w = fam.weight(mu)
    information = x.T @ (w[:, None] * x)
    edge = fam.boundary(mu)
    moved = np.abs(x @ (beta - previous)) > MOVING
    return np.concatenate(
        [
            information[np.triu_indices(len(beta))],
            x.T @ (y - mu),
            [
                fam.deviance(y, eta).sum(),
                ((y - mu) ** 2 / w).sum(),  # Pearson's chi-square
                fam.loglike(y, eta).sum(),
                edge.sum(),
                (edge & moved).sum(),  # still heading for the edge: separation
                fam.deviance(y, null_eta).sum(),
            ],
        ]
    )


class _Step:
    def __init__(self, sums: Array, p: int) -> None:
        upper = np.triu_indices(p)
        m = len(upper[0])
        information = np.zeros((p, p))
        information[upper] = sums[:m]
        self.information = information + np.triu(information, 1).T  # X'WX, summed
        self.score = sums[m : m + p]
        tail = sums[m + p :]
        self.deviance, self.pearson, self.loglike, self.null_deviance = tail[[0, 1, 2, 5]]
        self.boundary, self.moving = int(tail[3]), int(tail[4])  # rows; see `_step`


def _solve(information: Array, score: Array, iteration: int) -> Array:
    try:
        return np.linalg.solve(information, score)
    except np.linalg.LinAlgError:
        raise AnalyticsError(
            f"X'WX became singular at iteration {iteration}: the fit diverges (fitted values "
            "reach the edge of what the family allows)"
        ) from None


def _check_rank(information: Array, names: list[str]) -> None:
    """Refuse a singular design, naming each column that adds nothing to the earlier ones.

    At the first step W is the same for every row, so X'WX is X'X up to a factor. Scaled to a
    unit diagonal, a column's residual (1 - R^2 on the columns kept before it) below `ALIASED`
    makes it a combination of those; a zero diagonal is a column that is 0 in every row."""
    size = np.diag(information)
    zero = [n for n, s in zip(names, size, strict=True) if s == 0]
    if zero:
        raise AnalyticsError(
            f"the design is singular: {', '.join(zero)} is 0 in every row at every site (a "
            "level no site has, or a covariate always 0); leave it out of the formula"
        )
    unit = information / np.sqrt(np.outer(size, size))
    kept: list[int] = []
    aliased = []
    for j, name in enumerate(names):
        if kept:
            coef = np.linalg.solve(unit[np.ix_(kept, kept)], unit[kept, j])
            if 1 - unit[kept, j] @ coef < ALIASED:
                parts = [names[k] for k, c in zip(kept, coef, strict=True) if abs(c) > 1e-6]
                aliased.append(f"{name} is a linear combination of {', '.join(parts)}")
                continue
        kept.append(j)
    if aliased:
        raise AnalyticsError(
            f"the design is singular over all sites' rows: {'; '.join(aliased)}; leave "
            f"{'it' if len(aliased) == 1 else 'them'} out of the formula"
        )


def _separation(design: Design, fam: _Family, step: _Step, moves: Array, n: int) -> str:
    """Rows on the boundary whose linear predictor still moves: the maximum likelihood does
    not exist, the coefficients that carry the last step (sized by their column) diverge."""
    size = np.abs(moves)
    named = [
        name
        for name, s in zip(design.names, size, strict=True)
        if s > 0.01 * size.max() and name != INTERCEPT
    ]
    by = f" by {', '.join(named)}" if named else ""
    if fam.name == "poisson":
        return (
            f"the poisson fit diverges{by}: {step.boundary} rows have a fitted mean near 0 "
            f"where {design.outcome} is 0 (e.g. a level without any event), so the maximum "
            "likelihood does not exist; leave the covariate out or merge its levels"
        )
    kind = "perfect" if step.boundary == n else "quasi-complete"
    return (
        f"{kind} separation{by}: {design.outcome} is perfectly predicted in {step.boundary} of "
        f"{n} rows (fitted probabilities all but 0 or 1), so the maximum likelihood does not "
        "exist and the coefficients grow without bound; leave the covariate out or merge its "
        "levels"
    )


# --------------------------------------------------------------------------- the result


def _result(
    design: Design,
    fam: _Family,
    census: _Census,
    step: _Step,
    beta: Array,
    iterations: int,
    converged: bool,
    warnings: list[str],
) -> GLMResult:
    n, p = census.n, len(design.names)
    df_resid = n - p
    if fam.name == "gaussian":
        scale = step.pearson / df_resid
        llf = -n / 2 * (np.log(2 * np.pi * step.deviance / n) + 1)  # at the scale RSS / n
    else:
        scale, llf = 1.0, step.loglike
    se = np.sqrt(np.diag(np.linalg.inv(step.information)) * scale)
    z = beta / se
    q = norm.ppf(0.975)
    return GLMResult(
        formula=design.formula,
        family=fam.name,
        link=fam.link,
        outcome=design.outcome,
        names=list(design.names),
        coef=beta,
        se=se,
        z=z,
        p=2 * norm.sf(np.abs(z)),
        ci_low=beta - q * se,
        ci_high=beta + q * se,
        deviance=float(step.deviance),
        null_deviance=float(step.null_deviance),
        pearson_chi2=float(step.pearson),
        llf=float(llf),
        aic=float(-2 * llf + 2 * p),
        scale=float(scale),
        n=n,
        df_model=p - 1,
        df_resid=df_resid,
        iterations=iterations,
        converged=converged,
        sites=int(census.with_rows),
        warnings=warnings,
    )


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
