"""trajectories.privacy: person records, exact copies, Gower distances, membership inference,
singling-out / linkability / inference attacks and the report's privacy checks, on hand-made
cases with closed forms and on cohorts that copy their train persons or are drawn apart."""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy import stats
from typer.testing import CliRunner

from trajectories.cli import app
from trajectories.cohort import Cohort, Manifest, holdout_split, read_partitioned
from trajectories.fit import MultiStateModel
from trajectories.privacy import (
    aligned_records,
    copy_rate,
    copy_test,
    distance_test,
    equal_sizes,
    gower_distances,
    inference,
    linkability,
    membership_auc,
    person_records,
    singling_out,
    wilson,
)
from trajectories.privacy.attacks import Rate, residual
from trajectories.privacy.checks import privacy_checks
from trajectories.scenario import scenario_from_dict
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.sharded import simulate_sharded
from validation import Thresholds, compare
from validation.collect import Collector
from validation.published import load_published

SCENARIO = {
    "name": "privacy_test",
    "initial_state": "well",
    "states": [{"name": "well"}, {"name": "ill"}, {"name": "dead", "absorbing": True}],
    "transitions": [
        {"from": "well", "to": "ill", "hazard": {"family": "exponential", "rate": 0.002},
         "effects": {"marker": 0.3, "arm": {"b": -0.4}}},
        {"from": "well", "to": "dead", "hazard": {"family": "exponential", "rate": 0.0008}},
        {"from": "ill", "to": "dead", "hazard": {"family": "exponential", "rate": 0.003}},
    ],
    "covariates": {"arm": {"kind": "categorical", "levels": {"a": 0.5, "b": 0.5}},
                   "marker": {"kind": "normal", "mean": 0.0, "sd": 1.0}},
    "sites": [{"name": "A", "share": 0.5}, {"name": "B", "share": 0.5}],
    "followup": {"max_days": 1500, "loss_to_followup_per_year": 0.05},
}
N = 1_000
COVARIATE_ROW = ["site", "sex", "age", "arm", "marker"]
COMPLETE = [*COVARIATE_ROW, "exit", "followup_end", "n_state_entries", "last_state"]


def simulate(n: int, seed: int) -> Cohort:
    return MarkovSimulator(scenario_from_dict(SCENARIO)).simulate(n, seed=seed)


@pytest.fixture(scope="module")
def cohorts() -> dict[str, Cohort]:
    """Three independent draws of one population: synthetic, train and holdout."""
    return {"synthetic": simulate(N, 1), "train": simulate(N, 2), "holdout": simulate(N, 3)}


@pytest.fixture(scope="module")
def records(cohorts):
    return aligned_records(cohorts["synthetic"], cohorts["train"], cohorts["holdout"])


@pytest.fixture(scope="module")
def copied(cohorts):
    """A synthetic cohort that is its train cohort, verbatim (train and holdout of one size)."""
    return aligned_records(cohorts["train"], cohorts["train"], cohorts["holdout"])


# -- records --------------------------------------------------------------------------------------


def _hand_made_cohort() -> Cohort:
    persons = pl.DataFrame({
        "person_id": [1, 2, 3], "site": ["A", "A", "B"],
        "index_date": [dt.date(2000, 1, 1)] * 3,
        "birth_date": [dt.date(1970, 1, 1), None, dt.date(1999, 1, 1)],
        "sex": ["F", None, "M"], "followup_end": [20.0, 100.0, 50.0],
        "exit": ["death", "administrative_censoring", "lost_to_follow_up"],
        "grade": ["II", "III", None], "score": [3, 5, 8],
    })
    events = pl.DataFrame({
        "person_id": [1, 1, 1, 2, 3, 3],
        "time": [0.0, 10.0, 20.0, 0.0, 0.0, 5.0],
        "end_time": [None] * 6,
        "code": ["state:well", "state:ill", "state:dead", "state:well", "state:well",
                 "visit:outpatient"],
        "value": [None] * 6,
    }, schema_overrides={"end_time": pl.Float64, "value": pl.Float64})
    return Cohort(persons, events, Manifest.new("hand", 3))


def test_person_records_have_the_covariate_row_and_the_outcome_summary():
    records = person_records(_hand_made_cohort())
    expected = pl.DataFrame({
        "site": ["A", "A", "B"], "sex": ["F", None, "M"],
        "age": [10957 / 365.25, None, 365 / 365.25],   # days from birth to index / 365.25
        "grade": ["II", "III", None], "score": [3.0, 5.0, 8.0],
        "exit": ["death", "administrative_censoring", "lost_to_follow_up"],
        "followup_end": [20.0, 100.0, 50.0], "n_state_entries": [3.0, 1.0, 1.0],
        "last_state": ["dead", "well", "well"],
    })
    assert_frame_equal(records, expected)


def test_aligned_records_leave_out_what_cannot_be_compared():
    cohort = _hand_made_cohort()
    no_sex = Cohort(cohort.persons.with_columns(pl.lit(None, pl.String).alias("sex")),
                    cohort.events, cohort.manifest)
    no_score = Cohort(cohort.persons.drop("score"), cohort.events, cohort.manifest)
    aligned = aligned_records(no_score, no_sex, no_sex)
    assert aligned.dropped == {"sex": "null for every real person",
                               "score": "absent from the synthetic cohort"}
    assert aligned.covariate_columns == ["site", "age", "grade"]
    assert aligned.outcome_columns == ["exit", "followup_end", "n_state_entries", "last_state"]
    assert aligned.synthetic.columns == aligned.train.columns == aligned.holdout.columns


# -- exact copies ---------------------------------------------------------------------------------


def test_copy_shares_and_their_permutation_error_have_closed_forms():
    train = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "g": ["a", "b", "c", None]})
    holdout = pl.DataFrame({"x": [5.0, 6.0, 7.0, 8.0], "g": ["a", "b", "c", "d"]})
    synthetic = pl.DataFrame({"x": [1.0, 1.0, 4.0, 5.0, 9.0], "g": ["a", "a", None, "a", "z"]})
    test = copy_test(synthetic, train, holdout, ["x", "g"], np.random.default_rng(0),
                     permutations=4000)
    assert (test.train_rate, test.holdout_rate) == (3 / 5, 1 / 5)  # a null equals a null
    # Under shuffled labels the excess is sum_r c_r (2 L_r - 1) / 5, L a random half of the
    # 8 real rows (c = 2, 1, 1 synthetic copies of three of them): simple random sampling
    # without replacement gives Var(sum c L) = p(1-p) (N sum c^2 - (sum c)^2) / (N - 1).
    c = np.array([2, 1, 1, 0, 0, 0, 0, 0])
    variance = 4 * 0.25 * (8 * (c ** 2).sum() - c.sum() ** 2) / 7 / 25
    assert test.standard_error == pytest.approx(math.sqrt(variance), rel=0.06)
    assert copy_rate(synthetic, train, ["x"]) == 3 / 5
    assert copy_rate(synthetic, holdout, ["g"]) == 3 / 5  # on g alone: a, a, a


# -- Gower's distance -----------------------------------------------------------------------------


def test_gower_distance_equals_the_hand_computed_example():
    left = pl.DataFrame({"num": [0.0, 5.0], "cat": ["a", "b"], "opt": [1.0, None]})
    right = pl.DataFrame({"num": [10.0, 5.0], "cat": ["a", "a"], "opt": [None, None]})
    # num: range 10 over both; cat: 0/1; opt: a value against null 1, null against null 0.
    expected = np.array([[(1.0 + 0 + 1) / 3, (0.5 + 0 + 1) / 3],
                         [(0.5 + 1 + 0) / 3, (0.0 + 1 + 0) / 3]])
    np.testing.assert_allclose(gower_distances(left, right), expected, atol=1e-7)
    # Ranges from another frame: |0 - 10| / 5 = 2 is capped at 1.
    scaled = gower_distances(left, right, ["num"], reference=[pl.DataFrame({"num": [0.0, 5.0]})])
    np.testing.assert_allclose(scaled, [[1.0, 1.0], [1.0, 0.0]], atol=1e-7)


# -- membership inference, rates and risks --------------------------------------------------------


def test_membership_auc_is_mann_whitney_u_with_delong_standard_error():
    rng = np.random.default_rng(5)
    members = np.round(rng.exponential(1.0, 60), 1)      # rounded: ties
    others = np.round(rng.exponential(1.3, 45), 1)
    auc, se = membership_auc(members, others)
    u = stats.mannwhitneyu(-members, -others).statistic   # members score -distance
    assert auc == pytest.approx(u / (60 * 45), abs=1e-12)
    psi = (-members[:, None] > -others[None, :]) + 0.5 * (members[:, None] == others[None, :])
    brute = psi.mean(axis=1).var(ddof=1) / 60 + psi.mean(axis=0).var(ddof=1) / 45
    assert se == pytest.approx(math.sqrt(brute), rel=1e-10)


@pytest.mark.parametrize(("successes", "trials"), [(0, 20), (7, 20), (123, 500), (500, 500)])
def test_wilson_rates_match_scipy(successes, trials):
    rate = wilson(successes, trials)
    interval = stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    assert rate.value - rate.error == pytest.approx(interval.low, abs=1e-12)
    assert rate.value + rate.error == pytest.approx(interval.high, abs=1e-12)


def test_residual_risk_propagates_both_errors():
    risk = residual(Rate(0.5, 0.1), Rate(0.2, 0.05))
    assert risk.value == pytest.approx(0.3 / 0.8)
    assert risk.error == pytest.approx(math.sqrt((0.1 / 0.8) ** 2 + (0.05 * 0.5 / 0.64) ** 2))


# -- a verbatim copy of the train cohort ----------------------------------------------------------


def test_a_verbatim_copy_of_train_copies_everything(copied):
    rng = np.random.default_rng(0)
    t, h = equal_sizes(copied.train, copied.holdout, rng)
    assert t.height == h.height == N
    assert copied.covariate_columns == COVARIATE_ROW and copied.complete_columns == COMPLETE
    for columns in (copied.covariate_columns, copied.complete_columns):
        test = copy_test(copied.synthetic, t, h, columns, rng)
        assert (test.train_rate, test.holdout_rate) == (1.0, 0.0)
    distances = distance_test(copied.synthetic, t, h, copied.complete_columns, rng)
    assert distances.share_closer_to_train == 1.0
    assert distances.median_dcr_train == 0.0 < distances.median_dcr_holdout
    assert distances.median_nndr_train == 0.0
    assert distances.membership_auc == 1.0 and distances.auc_standard_error == 0.0


def test_a_verbatim_copy_is_singled_out_linked_and_inferred(copied):
    rng = np.random.default_rng(1)
    t, h = copied.train, copied.holdout
    for mode in ("univariate", "multivariate"):
        result = singling_out(copied.synthetic, t, h, COMPLETE, rng, mode=mode)
        # a predicate singling out a synthetic record singles out its original
        assert result.n_attacks >= 400 and result.n_success == result.n_attacks
        assert result.risk[1] > 0.8 and result.judged_interval[0] > 0.8
    linked = linkability(copied.synthetic, t, h, (COVARIATE_ROW, COMPLETE[5:]), rng)
    # the outcome summary of persons censored at the end of follow-up is shared by several
    assert linked.n_attacks == 500 and linked.n_success >= 450 and linked.n_control <= 5
    assert linked.judged_interval[0] > 0.8
    inferred = {r.subject: r for r in inference(copied.synthetic, t, h, COMPLETE,
                                                ["marker", "age", "followup_end"], rng)}
    for secret in ("marker", "age", "followup_end"):  # continuous: the copy is the only match
        assert inferred[secret].n_success == 500 and inferred[secret].judged_interval[0] > 0.8


def test_a_verbatim_copy_fails_the_privacy_checks(cohorts):
    col = Collector()
    context = privacy_checks(col, cohorts["train"], cohorts["train"], cohorts["holdout"],
                             Thresholds())
    col.resolve(0.05)
    checks = {(c.name, c.subject): c for c in col.checks}
    for name, subject in [
            ("exact covariate-row copies beyond chance", "covariate row"),
            ("complete-record copies beyond chance", "complete record"),
            ("share closer to train than holdout, |share - 0.5|", "complete record"),
            ("membership-inference AUC", "distance to the nearest synthetic record"),
            ("singling out risk, lower 95% bound", "univariate"),
            ("singling out risk, lower 95% bound", "multivariate (3 columns)"),
            ("attribute inference risk, lower 95% bound", "marker")]:
        assert checks[(name, subject)].failed, (name, subject)
    assert checks[("complete-record copies beyond chance", "complete record")].metric == 1.0
    assert checks[("membership-inference AUC",
                   "distance to the nearest synthetic record")].metric == 1.0
    assert "1,000 persons each" in context["privacy sample"]


# -- independent draws of one population ----------------------------------------------------------


def test_independent_draws_share_nothing_beyond_chance(records):
    rng = np.random.default_rng(2)
    t, h = records.train, records.holdout
    for columns in (records.covariate_columns, records.complete_columns):
        test = copy_test(records.synthetic, t, h, columns, rng)
        assert test.train_rate == test.holdout_rate == 0.0   # continuous age and marker
    distances = distance_test(records.synthetic, t, h, records.complete_columns, rng)
    # The closer side is the label of each synthetic record's nearest real one: under
    # exchangeable labels (L: a random half of the 2N real records) the share is
    # sum_r c_r L_r / N with c_r the synthetic records nearest real record r, whose variance
    # without replacement is p(1-p) (2N sum c^2 - N^2) / (2N - 1) / N^2.
    pool = pl.concat([t, h])
    nearest = gower_distances(records.synthetic, pool, records.complete_columns,
                              reference=[t, h]).argmin(axis=1)
    c = np.bincount(nearest, minlength=2 * N)
    sd = math.sqrt(0.25 * (2 * N * (c ** 2).sum() - N ** 2) / (2 * N - 1)) / N
    assert abs(distances.share_closer_to_train - 0.5) < 4 * sd
    assert distances.share_standard_error == pytest.approx(sd, rel=0.2)
    # Mann-Whitney under no membership signal: Var(AUC) = (m + n + 1) / (12 m n).
    null_sd = math.sqrt((2 * N + 1) / (12 * N * N))
    assert abs(distances.membership_auc - 0.5) < 4 * null_sd
    assert distances.auc_standard_error == pytest.approx(null_sd, rel=0.2)
    assert distances.median_dcr_train == pytest.approx(distances.median_dcr_holdout, rel=0.15)


def test_independent_draws_carry_no_attack_risk(records):
    rng = np.random.default_rng(3)
    s, t, h = records.synthetic, records.train, records.holdout
    results = [singling_out(s, t, h, COMPLETE, rng, mode=m) for m in ("univariate",
                                                                       "multivariate")]
    results.append(linkability(s, t, h, (COVARIATE_ROW, COMPLETE[5:]), rng))
    results += inference(s, t, h, COMPLETE, ["marker", "age", "arm", "exit", "followup_end"],
                         rng)
    for result in results:
        # Exchangeable train and holdout: equal success rates, up to a two-proportion z of 4.
        n = result.n_attacks
        pooled = (result.n_success + result.n_control) / (2 * n)
        gap = abs(result.n_success - result.n_control) / n
        assert gap <= 4 * math.sqrt(2 * pooled * (1 - pooled) / n) + 1e-12, result.summary()
        assert result.judged_interval[0] <= 0.10, result.summary()


def test_independent_draws_pass_the_privacy_checks(cohorts):
    col = Collector()
    privacy_checks(col, cohorts["synthetic"], cohorts["train"], cohorts["holdout"],
                   Thresholds(), seed=4)
    col.resolve(0.05)
    judged = [c for c in col.checks if c.verdict != "info"]
    assert len(judged) >= 4 + 3 + len(COMPLETE) - 1  # tests, attacks, inferred columns
    assert not [c for c in judged if c.failed], [(c.name, c.subject, c.metric)
                                                 for c in judged if c.failed]


# -- in compare() and the CLI ---------------------------------------------------------------------


PUBLISHED = """
source = "a made-up paper"
time_unit = "days"

[[endpoints]]
name = "overall_survival"
events = ["dead"]

[[figures]]
kind = "median"
endpoint = "overall_survival"
value = 800
lower = 1
upper = 5000
"""


def test_compare_shows_copy_shares_without_a_holdout_and_judges_with_one(cohorts, tmp_path):
    syn, ref, hold = cohorts["synthetic"], cohorts["train"], cohorts["holdout"]
    plain = compare(syn, ref, figures=False)
    shown = [c for c in plain.checks if c.group == "privacy"]
    assert {c.verdict for c in shown} == {"info"} and len(shown) == 2
    assert all(c.metric == 0.0 for c in shown)
    assert plain.context["privacy"].startswith("no holdout given") and "--holdout" in (
        plain.context["privacy"])
    judged = compare(syn, ref, holdout=hold, figures=False)
    privacy = [c for c in judged.checks if c.group == "privacy" and c.verdict != "info"]
    assert privacy and judged.passed, [c.name for c in judged.failures]
    assert judged.context["privacy holdout"] == "given (1,000 persons)"
    (tmp_path / "paper.toml").write_text(PUBLISHED, encoding="utf-8")
    published = compare(syn, load_published(tmp_path / "paper.toml"), holdout=hold,
                        figures=False)
    assert published.context["privacy"].startswith("not measured") and (
        published.context["privacy"].endswith("the holdout given is not used"))
    assert not [c for c in published.checks if c.group == "privacy"]


def test_a_split_recorded_in_the_manifest_makes_the_holdout(cohorts):
    reference = cohorts["train"]
    train, held = holdout_split(reference, 0.5, seed=9)
    manifest = train.manifest.model_copy(update={"reference_split": {"fraction": 0.5,
                                                                      "seed": 9}})
    synthetic = Cohort(train.persons, train.events, manifest)  # fitted on train: copied it
    report = compare(synthetic, reference, figures=False)
    assert "reference_split: fraction 0.5, seed 9" in report.context["privacy train"]
    assert report.context["privacy holdout"] == (
        f"the holdout part of that split ({held.n_persons:,} persons)")
    copies = next(c for c in report.checks if c.name == "complete-record copies beyond chance")
    assert copies.failed and copies.details["copy_share_whole_train"] == 1.0
    # A split recorded for another reference (its fingerprint differs) is not trusted.
    elsewhere = Cohort(train.persons, train.events, manifest.model_copy(
        update={"reference_fingerprint": "0" * 64}))
    refused = compare(elsewhere, reference, figures=False)
    assert "fingerprints differ" in refused.context["privacy split"]
    assert {c.verdict for c in refused.checks if c.group == "privacy"} == {"info"}


def test_a_model_fitted_with_a_holdout_fraction_is_judged_on_its_split(cohorts):
    reference = cohorts["train"]
    with warnings.catch_warnings():  # resampling whole rows warns: that is what is tested
        warnings.simplefilter("ignore")
        model = MultiStateModel(covariate_draw="resample", holdout_fraction=0.3,
                                holdout_seed=2).fit(reference)
    synthetic = model.simulate(N, seed=5)
    assert synthetic.manifest.reference_split == {"fraction": 0.3, "seed": 2}
    report = compare(synthetic, reference, figures=False)
    held = holdout_split(reference, 0.3, seed=2)[1]
    assert report.context["privacy holdout"] == (
        f"the holdout part of that split ({held.n_persons:,} persons)")
    checks = {c.name: c for c in report.checks if c.group == "privacy"}
    rows = checks["exact covariate-row copies beyond chance"]
    assert rows.failed and rows.details["copy_share_whole_train"] == 1.0  # resampled rows
    assert not checks["complete-record copies beyond chance"].failed  # outcomes simulated


def test_a_partitioned_synthetic_cohort_uses_its_person_sample(cohorts, tmp_path):
    simulator = MarkovSimulator(scenario_from_dict(SCENARIO), block_size=300)
    directory = simulate_sharded(simulator, tmp_path / "syn", n=N, seed=1)
    dataset = read_partitioned(directory)
    by_blocks = compare(dataset, cohorts["train"], holdout=cohorts["holdout"], figures=False)
    in_memory = compare(dataset.collect(), cohorts["train"], holdout=cohorts["holdout"],
                        figures=False)
    keyed = [{(c.name, c.subject): c for c in r.checks if c.group == "privacy"}
             for r in (by_blocks, in_memory)]
    assert set(keyed[0]) == set(keyed[1]) and len(keyed[0]) > 15
    for key in [("exact covariate-row copies beyond chance", "covariate row"),
                ("share closer to train than holdout, |share - 0.5|", "complete record"),
                ("membership-inference AUC", "distance to the nearest synthetic record")]:
        assert keyed[0][key].metric == pytest.approx(keyed[1][key].metric, abs=1e-12)


def test_validate_cli_with_a_holdout_writes_the_privacy_section(cohorts, tmp_path):
    for name, cohort in cohorts.items():
        cohort.write(tmp_path / name)
    runner = CliRunner()
    result = runner.invoke(app, ["validate", str(tmp_path / "synthetic"), "--reference",
                                 str(tmp_path / "train"), "--holdout", str(tmp_path / "holdout"),
                                 "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    privacy = [c for c in data["checks"] if c["group"] == "privacy"]
    names = {c["name"] for c in privacy if c["verdict"] == "pass"}
    assert {"membership-inference AUC", "singling out risk, lower 95% bound",
            "exact covariate-row copies beyond chance"} <= names
    assert data["context"]["privacy holdout"] == "given (1,000 persons)"
    assert "membership-inference AUC" in (tmp_path / "report" / "report.html").read_text()
    copy = runner.invoke(app, ["validate", str(tmp_path / "train"), "--reference",
                               str(tmp_path / "train"), "--holdout", str(tmp_path / "holdout"),
                               "--report", str(tmp_path / "copy")])
    assert copy.exit_code == 1 and "FAIL privacy: complete-record copies" in " ".join(
        copy.output.split())


def test_the_privacy_thresholds_are_documented_fields():
    fields = Thresholds.model_fields
    assert Thresholds().max_membership_auc == 0.60 and Thresholds().max_attack_risk == 0.10
    for name in ("max_copy_excess", "closer_to_train_band", "max_membership_auc",
                 "max_attack_risk"):
        assert fields[name].description.startswith("privacy")
