"""Covariates synthesised from aggregates (the default ``covariate_draw='copula'``): marginals
keep each covariate's type, pairwise dependence is kept within stated tolerances, small cells
are merged, no synthetic person is a real row, and no file of a saved model holds a real row
or id."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy import stats

from trajectories.disclosure import MIN_CELL, merge_rare_levels, robust_range
from trajectories.fit import MultiStateModel
from trajectories.io import from_survival_table

N = 4000


def cramers_v(a: pl.Series, b: pl.Series) -> float:
    """Cramer's V of two categorical columns (Cramer 1946)."""
    table = pd.crosstab(a.to_pandas(), b.to_pandas()).to_numpy()
    chi2 = stats.chi2_contingency(table, correction=False)[0]
    return math.sqrt(chi2 / (table.sum() * (min(table.shape) - 1)))


def with_age(persons: pl.DataFrame) -> pl.DataFrame:
    """Persons with ``age`` in years at index (a cohort stores birth dates)."""
    if "age" in persons.columns:
        return persons
    return persons.with_columns(
        ((pl.col("index_date") - pl.col("birth_date")).dt.total_days() / 365.25).alias("age"))


@pytest.fixture(scope="module")
def reference():
    """Two sites; a continuous pair (age, marker) with Spearman rho ~0.5, an integer count, a
    rare 0/1 flag, a categorical pair (stage, grade) that depend on each other and on age, a
    rare level, and a site of 6 persons."""
    rng = np.random.default_rng(7)
    n = N
    z = rng.multivariate_normal([0, 0, 0], [[1, 0.5, 0.4], [0.5, 1, 0.0], [0.4, 0.0, 1]], n)
    site = np.where(rng.random(n) < 0.4, "north", "south")
    site[:6] = "tiny"
    age = 60 + 9 * z[:, 0] + np.where(site == "north", 3.0, 0.0)
    marker = np.exp(0.5 * z[:, 1]) * 10
    stage = np.where(z[:, 2] > 0.3, "late", "early")
    grade = np.where(z[:, 2] + rng.normal(0, 0.8, n) > 0, "high", "low")
    nodes = rng.poisson(np.exp(1 + 0.5 * z[:, 2]))
    flag = (rng.random(n) < 0.012).astype(float)
    histology = rng.choice(["adeno", "squamous", "large", "rare1", "rare2"], n,
                           p=[0.6, 0.3, 0.0985, 0.001, 0.0005])
    time = rng.exponential(700 * np.exp(-0.02 * (age - 60)))
    frame = pd.DataFrame({"t": np.minimum(time, 1500) + 1, "e": (time < 1500).astype(int),
                          "age": age, "marker": marker, "stage": stage, "grade": grade,
                          "nodes": nodes, "flag": flag, "histology": histology, "site": site,
                          "id": 9_000_000_000 + rng.permutation(n) * 7919})
    return from_survival_table(frame, "t", "e", id_col="id", age_col="age", site_col="site",
                               covariates=["marker", "stage", "grade", "nodes", "flag",
                                           "histology"])


@pytest.fixture(scope="module")
def model(reference):
    return MultiStateModel(processes=False).fit(reference)


@pytest.fixture(scope="module")
def synthetic(model):
    return model.simulate(N, seed=3)


def test_marginals_keep_each_covariate_type(model, reference, synthetic):
    marginals = model.covariate_model_.marginals
    assert marginals["flag"].kind == "discrete" and marginals["flag"].values == (0.0, 1.0)
    assert marginals["nodes"].kind == "quantiles" and marginals["nodes"].integer
    assert marginals["age"].kind == "quantiles" and not marginals["age"].integer
    assert marginals["stage"].kind == "categorical"
    syn, ref = with_age(synthetic.persons), with_age(reference.persons)
    # the rare flag keeps its share (binomial tolerance over both samples)
    p = ref["flag"].mean()
    assert abs(syn["flag"].mean() - p) < 4 * math.sqrt(p * (1 - p) * 2 / N)
    assert set(syn["flag"].unique().to_list()) == {0.0, 1.0}
    assert (syn["nodes"] == syn["nodes"].round()).all()
    # each site's age mean within sampling error of its real mean
    for site in ("north", "south"):
        a = syn.filter(pl.col("site") == site)["age"]
        b = ref.filter(pl.col("site") == site)["age"]
        assert abs(a.mean() - b.mean()) < 4 * 9 * math.sqrt(1 / a.len() + 1 / b.len()), site


def test_pairwise_dependence_is_kept(model, reference, synthetic):
    syn, ref = with_age(synthetic.persons), with_age(reference.persons)
    for a, b in (("age", "marker"), ("age", "nodes"), ("marker", "nodes")):
        real = stats.spearmanr(ref[a], ref[b]).statistic
        ours = stats.spearmanr(syn[a], syn[b]).statistic
        # sd of a Spearman estimate ~ (1 - rho^2) / sqrt(n) per sample
        assert abs(ours - real) < 4 * (1 - real**2) * math.sqrt(2 / N) + 0.02, (a, b, real, ours)
    for a, b in (("stage", "grade"),):
        real, ours = cramers_v(ref[a], ref[b]), cramers_v(syn[a], syn[b])
        # a binary pair's V is |phi|, sd ~ 1/sqrt(n) per sample; the polychoric copula: 0.02 more
        assert abs(ours - real) < 4 * math.sqrt(2 / N) + 0.02, (a, b, real, ours)


def test_small_cells_are_merged_with_notes(model, reference, synthetic):
    assert "tiny" not in model.sites_
    notes = " ".join(model.notes_)
    assert "['tiny']" in notes and "rare1" in notes and "rare2" in notes
    histology = model.covariate_model_.marginals["histology"]
    assert "rare1" not in histology.levels and "rare2" not in histology.levels
    assert set(synthetic.persons["histology"].unique().to_list()) <= set(histology.levels)
    assert set(synthetic.persons["site"].unique().to_list()) == {"north", "south"}


def test_no_knot_is_an_extreme_and_inner_knots_lie_within_the_robust_range(model, reference):
    persons = with_age(reference.persons)
    for name in ("age", "marker", "nodes"):
        values = persons[name].cast(pl.Float64).to_numpy()
        knots = np.asarray(model.covariate_model_.marginals[name].values)
        low, high = robust_range(values)
        assert np.all((knots[1:-1] >= low) & (knots[1:-1] <= high)), name
        # an extreme held by fewer than MIN_CELL persons is never a knot
        for extreme in (values.min(), values.max()):
            if (values == extreme).sum() < MIN_CELL:
                assert extreme not in knots, (name, extreme)


def test_no_synthetic_person_is_a_real_row(reference, model):
    columns = ["age", "marker"]
    synthetic = with_age(model.simulate(10 * N, seed=5).persons)
    copies = synthetic.join(with_age(reference.persons), on=columns, how="semi")
    assert copies.height == 0


def test_no_file_of_a_saved_model_holds_a_real_row_or_id(model, reference, tmp_path):
    directory = model.save(tmp_path / "model")
    texts = {path.name: path.read_text(encoding="utf-8") for path in directory.iterdir()}
    assert sorted(texts) == ["fit.json", "scenario.toml"]
    numbers = set()
    for text in texts.values():
        numbers |= {float(x) for x in re.findall(r"-?\d+\.?\d*(?:[eE][-+]?\d+)?", text)}
    persons = with_age(reference.persons)
    assert not numbers & set(persons["person_id"].cast(pl.Float64).to_list())
    # no person's pair of continuous values is in the files (a single value may be a quantile)
    found = persons.select(pl.col("age").is_in(list(numbers)) & pl.col("marker").is_in(
        list(numbers))).to_series()
    assert not found.any()


def test_resampling_is_explicit_and_ships_rows_without_ids(reference, tmp_path):
    from trajectories.errors import PrivacyWarning

    with pytest.warns(PrivacyWarning, match="copies real persons' covariate rows"):
        model = MultiStateModel(processes=False, covariate_draw="resample").fit(reference)
    directory = model.save(tmp_path / "resample")
    rows = pl.read_parquet(directory / "baseline.parquet")
    assert "person_id" not in rows.columns and rows.height == reference.n_persons


def test_merge_rare_levels_rule():
    assert merge_rare_levels({"a": 50, "b": 5, "c": 7}) == {"a": "a", "b": "other", "c": "other"}
    assert merge_rare_levels({"a": 50, "b": 3}) == {"a": "a", "b": "a"}
    assert merge_rare_levels({"a": 20, "b": 30, "c": MIN_CELL}) == {"a": "a", "b": "b", "c": "c"}
    assert robust_range(np.arange(100.0)) == (10.0, 89.0)
    assert robust_range(np.arange(10.0)) == (4.5, 4.5)
