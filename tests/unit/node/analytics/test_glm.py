"""Federated GLMs equal statsmodels' GLM on the pooled rows: the four heart-disease hospitals
and synthetic sites with known coefficients, every site running the real lock-step protocol
concurrently (`sites.run_sites`). Errors are taken by every site alike and name their cause."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
import trio
from scipy.special import expit

from node.analytics.design import design
from node.analytics.glm import TABLE_COLUMNS, GLMResult, fit_glm
from node.dataset import load_frame, load_schema
from node.errors import AnalyticsError
from tests.unit.node.analytics.sites import run_sites

ROOT = Path(__file__).resolve().parents[4]
SCHEMA = load_schema(ROOT / "data/heart-disease/schema.toml")
SITES = ["cleveland", "hungarian", "switzerland", "va"]
FAMILIES = {
    "gaussian": sm.families.Gaussian(),
    "binomial": sm.families.Binomial(),
    "poisson": sm.families.Poisson(),
}
HEART_MODELS = [
    ("outcome ~ age + sex + cp + thalach", "binomial"),
    ("num ~ age + sex + cp", "poisson"),
    ("thalach ~ age + sex + cp", "gaussian"),
]
LOGIT = "outcome ~ age + sex + cp + thalach"


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    return [load_frame(ROOT / f"data/heart-disease/processed.{s}.data", SCHEMA) for s in SITES]


def fit_sites(frames, formula, family, **options):
    """Every site's outcome (a result or the exception it raised) and its count of sums."""
    calls = [0] * len(frames)

    async def work(site, total):
        i, frame = site

        async def counted(vector):
            calls[i] += 1
            return await total(vector)

        with trio.fail_after(60):  # a site left waiting for the others fails, not hangs
            return await fit_glm(design(frame, formula), family, counted, **options)

    return run_sites(list(enumerate(frames)), work), calls


def fitted(frames, formula, family, **options) -> GLMResult:
    """The one result every site reached, after the same number of sums."""
    results, calls = fit_sites(frames, formula, family, **options)
    first = results[0]
    assert all(isinstance(r, GLMResult) for r in results), results
    for r in results:
        np.testing.assert_array_equal(r.coef, first.coef)
        np.testing.assert_array_equal(r.se, first.se)
        assert r.to_dict() == first.to_dict()
    assert calls == [1 + first.iterations] * len(frames)  # counts, then one per iteration
    return first


def refused(frames, formula, family, **options) -> str:
    """The message of the error every site raised, after the same number of sums."""
    results, calls = fit_sites(frames, formula, family, **options)
    assert all(isinstance(r, AnalyticsError) for r in results), results
    assert len(set(calls)) == 1
    return str(results[0])


def assert_equals_statsmodels(got: GLMResult, ref) -> None:
    names = got.names  # patsy puts categorical terms first: compare by name
    assert sorted(names) == sorted(ref.params.index)
    np.testing.assert_allclose(got.coef, ref.params[names], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.se, ref.bse[names], rtol=0, atol=1e-6)
    # statsmodels' standard errors use the weights of its last iterate but one (within its
    # tolerance of ours, which uses the last): z and p agree to a few parts in a million
    np.testing.assert_allclose(got.z, ref.tvalues[names], rtol=1e-5)
    np.testing.assert_allclose(got.p, ref.pvalues[names], rtol=1e-4, atol=1e-12)
    ci = ref.conf_int().loc[names].to_numpy()
    np.testing.assert_allclose(np.c_[got.ci_low, got.ci_high], ci, rtol=0, atol=1e-6)
    for field in ("deviance", "null_deviance", "llf", "aic", "scale", "pearson_chi2"):
        assert getattr(got, field) == pytest.approx(getattr(ref, field), rel=1e-6), field
    assert (got.n, got.df_resid, got.df_model) == (ref.nobs, ref.df_resid, ref.df_model)
    assert got.converged and not got.warnings


@pytest.mark.parametrize(("formula", "family"), HEART_MODELS)
def test_heart_disease_equals_statsmodels_on_the_pooled_rows(frames, formula, family):
    got = fitted(frames, formula, family)
    pooled = pd.concat(frames, ignore_index=True)
    # patsy's coding (statsmodels' formulas), independent of formulaic; rows with NaN dropped
    ref = smf.glm(formula, pooled, family=FAMILIES[family]).fit()
    assert_equals_statsmodels(got, ref)
    assert got.sites == 4 and got.family == family


LEVELS = [1.0, 2.0, 3.0]
TRUE = {"Intercept": -0.3, "x1": 0.8, "x2": -0.5, "g[T.2.0]": 0.6, "g[T.3.0]": -0.4}


def synthetic(family: str, sites: int = 10, seed: int = 16) -> list[pd.DataFrame]:
    """Sites of 20 to 200 rows from a model with coefficients `TRUE`; x2 sometimes missing,
    and the first site without level 3 of g."""
    rng = np.random.default_rng(seed)
    frames = []
    for site in range(sites):
        n = int(rng.integers(20, 200))
        x1, x2 = rng.normal(size=n), rng.uniform(-1, 2, size=n)
        g = rng.choice(LEVELS[:2] if site == 0 else LEVELS, size=n)
        eta = TRUE["Intercept"] + TRUE["x1"] * x1 + TRUE["x2"] * x2
        eta += TRUE["g[T.2.0]"] * (g == 2.0) + TRUE["g[T.3.0]"] * (g == 3.0)
        if family == "gaussian":
            y = eta + rng.normal(scale=2.0, size=n)
        elif family == "binomial":
            y = (rng.random(n) < expit(eta)).astype(float)
        else:
            y = rng.poisson(np.exp(eta)).astype(float)
        x2[rng.random(n) < 0.05] = np.nan
        g = pd.Categorical(g, categories=LEVELS)
        frames.append(pd.DataFrame({"y": y, "x1": x1, "x2": x2, "g": g}))
    return frames


@pytest.mark.parametrize("family", FAMILIES)
def test_ten_synthetic_sites_equal_statsmodels_and_find_the_coefficients(family):
    frames = synthetic(family)
    got = fitted(frames, "y ~ x1 + x2 + g", family)
    pooled = pd.concat(frames, ignore_index=True).dropna()
    g = pooled["g"].to_numpy(float)
    x = np.column_stack([np.ones(len(pooled)), pooled["x1"], pooled["x2"], g == 2.0, g == 3.0])
    x = pd.DataFrame(x.astype(float), columns=list(TRUE))  # built by hand: no formula library
    ref = sm.GLM(pooled["y"].to_numpy(), x, family=FAMILIES[family]).fit()
    assert_equals_statsmodels(got, ref)
    assert got.sites == 10
    # the data are what they claim: the truth lies within four standard errors
    assert np.all(np.abs(got.coef - np.array(list(TRUE.values()))) < 4 * got.se)


def test_a_site_with_no_rows_contributes_nothing(frames):
    four = fitted(frames, LOGIT, "binomial")
    five = fitted([*frames, frames[0].iloc[:0]], LOGIT, "binomial")
    np.testing.assert_allclose(five.coef, four.coef, rtol=0, atol=1e-12)
    assert (five.n, five.sites) == (four.n, 4)


def test_a_site_lacking_a_level_fits_as_the_pooled_rows(frames):
    sites = [frames[0][frames[0]["cp"] != 1.0], *frames[1:3], frames[3][frames[3]["cp"] == 4.0]]
    got = fitted(sites, LOGIT, "binomial")
    ref = smf.glm(LOGIT, pd.concat(sites), family=FAMILIES["binomial"]).fit()
    assert_equals_statsmodels(got, ref)


def test_non_convergence_is_a_warning_in_the_result(frames):
    got = fitted(frames, LOGIT, "binomial", max_iter=2)
    assert not got.converged and got.iterations == 2
    assert "did not converge in 2 iterations" in got.warnings[0]


def test_result_as_json_and_as_a_table(frames):
    got = fitted(frames, "num ~ age + sex + cp", "poisson")
    data = json.loads(json.dumps(got.to_dict(), allow_nan=False))
    assert data["family"] == "poisson" and data["link"] == "log" and data["outcome"] == "num"
    assert data["aic"] == got.aic and data["sites"] == 4 and data["converged"] is True
    rows = got.table()
    assert [list(r) for r in rows] == [TABLE_COLUMNS] * len(got.names)
    assert [r["covariate"] for r in rows] == got.names and rows[1]["coef"] == got.coef[1]
    assert data["coefficients"] == rows


# --------------------------------------------------------------------------- refusals


def edit(frames, change):
    return [change(f.copy()) for f in frames]


def test_binomial_refuses_an_outcome_other_than_0_or_1(frames):
    message = refused(frames, "num ~ age + sex", "binomial")
    pooled = pd.concat(frames)
    assert "num" in message and f"in {(~pooled['num'].isin([0, 1])).sum()} of" in message


@pytest.mark.parametrize(
    ("outcome", "bad"),
    [("I(num - 1)", lambda num: num < 1), ("I(num / 2)", lambda num: num % 2 == 1)],
)
def test_poisson_refuses_a_negative_or_fractional_count(frames, outcome, bad):
    message = refused(frames, f"{outcome} ~ age + sex", "poisson")
    pooled = pd.concat(frames)
    assert f"{outcome} is not, in {bad(pooled['num']).sum()} of" in message


def test_an_outcome_the_same_everywhere_is_refused(frames):
    message = refused(edit(frames, lambda f: f.assign(outcome=0)), "outcome ~ age", "binomial")
    assert "outcome is 0 in every one" in message


def test_a_combination_of_other_columns_is_named(frames):
    message = refused(frames, "outcome ~ age + sex + I(age + sex)", "binomial")
    assert "I(age + sex) is a linear combination of age, sex" in message


def test_a_reference_level_no_site_has_makes_the_others_a_combination(frames):
    without = edit(frames, lambda f: f[f["cp"] != 1.0])
    message = refused(without, "outcome ~ age + sex + cp", "binomial")
    assert "cp[T.4.0] is a linear combination of Intercept, cp[T.2.0], cp[T.3.0]" in message


def test_a_level_no_site_has_is_a_column_of_zeros(frames):
    without = edit(frames, lambda f: f[f["cp"] != 2.0])
    message = refused(without, "outcome ~ age + sex + cp", "gaussian")
    assert "cp[T.2.0] is 0 in every row at every site" in message


def test_quasi_complete_separation_names_the_covariate(frames):
    def no_disease_with_atypical_angina(f):
        f.loc[f["cp"] == 2.0, "outcome"] = 0
        return f

    message = refused(edit(frames, no_disease_with_atypical_angina), LOGIT, "binomial")
    assert message.startswith("quasi-complete separation by cp[T.2.0]:"), message


def test_perfect_separation_names_the_covariate(frames):
    def by_heart_rate(f):
        f["outcome"] = (f["thalach"] > 140).astype(int)
        return f

    message = refused(edit(frames, by_heart_rate), LOGIT, "binomial")
    assert message.startswith("perfect separation by thalach:"), message


def test_poisson_diverging_on_a_level_without_events_is_named(frames):
    def no_events_with_atypical_angina(f):
        f.loc[f["cp"] == 2.0, "num"] = 0
        return f

    message = refused(edit(frames, no_events_with_atypical_angina), "num ~ age + cp", "poisson")
    assert message.startswith("the poisson fit diverges by cp[T.2.0]:"), message


def test_sites_that_built_different_columns_are_refused(frames):
    # C(sex) takes its levels from each site's rows: a site of men only has no C(sex) column
    men_only = frames[1][frames[1]["sex"] == 1.0]
    message = refused([frames[0], men_only], "outcome ~ age + C(sex)", "binomial")
    assert "the sites built different models" in message


def test_infinite_values_are_refused(frames):
    message = refused(frames, "outcome ~ I(1 / sex)", "binomial")
    women = (pd.concat(frames)["sex"] == 0).sum()
    assert message.startswith(f"{women} rows have an infinite value")


def test_fewer_rows_than_coefficients_and_unknown_family(frames):
    assert "4 complete rows over all sites for 7" in refused(
        [f.iloc[:1] for f in frames], LOGIT, "binomial"
    )
    assert "unknown family 'weibull'" in refused(frames, LOGIT, "weibull")
