"""compare() and `trajectories validate` on a partitioned cohort: read block by block, never
whole, with the verdicts, metrics, thresholds and details of the same cohort in memory."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from trajectories.cli import app
from trajectories.cohort import PartitionedCohort, read_partitioned
from trajectories.parallel import Parallel
from trajectories.simulate import MarkovSimulator
from trajectories.simulate.sharded import simulate_sharded
from validation import compare, lazy
from validation.published import load_published
from validation.survival_checks import event_quantiles

N, BLOCK = 3_000, 400  # eight blocks, the last one short
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "published"
compare_module = importlib.import_module("validation.compare")  # the package exports the function


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    simulator = MarkovSimulator("oncology_nsclc_two_arm", block_size=BLOCK)
    return simulate_sharded(simulator, tmp_path_factory.mktemp("cohort"), n=N, seed=11)


@pytest.fixture(scope="module")
def reference():
    return MarkovSimulator("oncology_nsclc_two_arm").simulate(2_000, seed=12)


def keyed(report) -> dict:
    return {(c.group, c.name, c.subject, c.site): c for c in report.checks}


def assert_same_checks(a, b, groups=None) -> None:
    ka, kb = keyed(a), keyed(b)
    assert set(ka) == set(kb)
    for key in ka:
        if groups is None or key[0] in groups:
            assert (ka[key].metric, ka[key].threshold, ka[key].verdict, ka[key].details) == (
                kb[key].metric, kb[key].threshold, kb[key].verdict, kb[key].details), key


def test_partitioned_compare_equals_the_in_memory_compare(directory, reference, monkeypatch):
    dataset = read_partitioned(directory)
    in_memory = compare(dataset.collect(), reference, figures=False)
    by_blocks = compare(dataset, reference, figures=False)
    groups = {c.group for c in in_memory.checks}
    assert {"integrity", "survival", "hazard ratios", "transitions", "distributions"} <= groups
    assert len(in_memory.checks) > 60
    assert_same_checks(in_memory, by_blocks)
    assert "block by block (8 blocks)" in by_blocks.context["synthetic read"]
    monkeypatch.setattr(lazy, "FOLD_EVERY", 3)  # running totals of three blocks at a time
    two_workers = compare(dataset, reference, figures=False, parallel=Parallel(workers=2))
    assert_same_checks(by_blocks, two_workers)


def test_above_the_sample_size_aggregates_stay_exact_and_rows_are_sampled(
        directory, reference, monkeypatch):
    dataset = read_partitioned(directory)
    in_memory = compare(dataset.collect(), reference, figures=False)
    monkeypatch.setattr(compare_module, "SAMPLE_CAP", 1_000)
    sampled = compare(dataset, reference, figures=False)
    # Survival, jump chain and sojourn checks come from the aggregates: unchanged.
    exact = {k: c for k, c in keyed(in_memory).items()
             if c.group in ("survival", "integrity") or "jump chain" in c.name
             or "sojourn" in c.name}
    assert len(exact) > 40
    for key, check in exact.items():
        other = keyed(sampled)[key]
        assert check.metric == other.metric and check.verdict == other.verdict, key
    # Each person kept with probability 1000 / 3000: the sample size is binomial.
    size = int(sampled.context["synthetic read"].split("sample of ")[1].split(" ")[0]
               .replace(",", ""))
    assert abs(size - 1_000) < 4 * np.sqrt(N * (1 / 3) * (2 / 3))
    occupation = ("transitions", "state occupation max difference", "all states", None)
    assert keyed(sampled)[occupation].details["sampled"] is True
    assert keyed(sampled)[occupation].details["informative_persons"][0] < size + 1


def test_a_broken_block_fails_integrity_and_names_its_persons(directory, reference, tmp_path):
    dataset = read_partitioned(directory)
    copy_dir = tmp_path / "broken"
    for sub in ("persons", "events"):
        (copy_dir / sub).mkdir(parents=True)
        for file in (directory / sub).iterdir():
            (copy_dir / sub / file.name).write_bytes(file.read_bytes())
    (copy_dir / "manifest.json").write_bytes((directory / "manifest.json").read_bytes())
    # In block 5, the first two persons' events get negative times.
    events_file = copy_dir / dataset.blocks[5]["events_file"]
    events = pl.read_parquet(events_file)
    victims = events.get_column("person_id").unique(maintain_order=True).head(2)
    broken = events.with_columns(
        pl.when(pl.col("person_id").is_in(victims.implode()) & (pl.col("time") > 0))
        .then(-pl.col("time")).otherwise(pl.col("time")).alias("time"))
    broken.write_parquet(events_file)
    report = compare(read_partitioned(copy_dir), reference, figures=False)
    assert not report.passed
    assert {c.group for c in report.checks} == {"integrity"}
    failed = [c for c in report.checks if c.failed]
    by_name = {c.name: c for c in failed}
    assert by_name["time_value"].metric == 2
    assert by_name["time_value"].details["first_person_ids"] == victims.to_list()
    assert all(set(c.details["first_person_ids"]) <= set(victims.to_list()) for c in failed)


def test_a_resolution_rounds_both_sides_alike(directory, reference):
    dataset = read_partitioned(directory)
    exact = compare(dataset, reference, figures=False)
    daily = compare(dataset, reference, figures=False, resolution=1.0)
    assert_same_checks(compare(dataset.collect(), reference, figures=False, resolution=1.0),
                       daily)
    assert "resolution (days)" in daily.context and "resolution (days)" not in exact.context
    key = ("survival", "log-rank", "overall_survival", None)
    assert keyed(daily)[key].metric != keyed(exact)[key].metric
    assert abs(keyed(daily)[key].metric - keyed(exact)[key].metric) < 0.05


def test_published_figures_of_a_partitioned_cohort(tmp_path):
    simulator = MarkovSimulator("oncology_nsclc_two_arm", block_size=1_500)
    directory = simulate_sharded(simulator, tmp_path / "c", n=6_000, seed=5)
    published = load_published(EXAMPLES / "keynote189.toml")
    dataset = read_partitioned(directory)
    in_memory = compare(dataset.collect(), published, figures=False)
    by_blocks = compare(dataset, published, figures=False)
    assert len(by_blocks.checks) == 5
    assert [(c.name, c.subject, c.metric, c.verdict) for c in by_blocks.checks] == [
        (c.name, c.subject, c.metric, c.verdict) for c in in_memory.checks]
    # Without [[endpoints]], the default ones come from the blocks' states and votes.
    text = (EXAMPLES / "keynote189.toml").read_text()
    defaults = text[:text.index("[[endpoints]]")] + text[text.index("[[figures]]"):]
    defaults = defaults.replace("progression_free_survival", "event_free_survival")
    defaults += ('\n[[figures]]\nkind = "transition_probability"\nfrom = "progression_free"\n'
                 'to = "progressed"\nvalue = 0.8\nlower = 0.0\nupper = 1.0\n')
    (tmp_path / "defaults.toml").write_text(defaults)
    published = load_published(tmp_path / "defaults.toml")
    in_memory = compare(dataset.collect(), published, figures=False)
    by_blocks = compare(dataset, published, figures=False)
    assert len(by_blocks.checks) == 6 and by_blocks.checks[-1].name == "transition probability"
    assert [(c.name, c.subject, c.metric, c.verdict) for c in by_blocks.checks] == [
        (c.name, c.subject, c.metric, c.verdict) for c in in_memory.checks]


def test_validate_cli_reads_a_partitioned_cohort_without_collecting_it(
        directory, reference, tmp_path, monkeypatch):
    reference.write(tmp_path / "ref")

    def refuse(self, check=True):
        raise AssertionError("the partitioned cohort was collected")

    monkeypatch.setattr(PartitionedCohort, "collect", refuse)
    result = CliRunner().invoke(app, [
        "validate", str(directory), "--reference", str(tmp_path / "ref"), "--report",
        str(tmp_path / "report"), "--workers", "2"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["passed"] is True and data["counts"]["pass"] > 60
    assert "block by block" in data["context"]["synthetic read"]
    monkeypatch.undo()
    expected = compare(read_partitioned(directory), reference)
    assert data["counts"] == expected.counts()


def test_block_aggregates_of_a_cohort_keep_the_cohort_as_its_sample(reference):
    whole = lazy.block_aggregates(reference, [], sample_fraction=1.0)
    assert whole.sample is reference
    half = lazy.block_aggregates(reference, [], sample_fraction=0.5, sample_seed=(1, 2))
    n = reference.n_persons
    assert abs(half.sample.n_persons - n / 2) < 4 * np.sqrt(n / 4)
    assert half.sample.events.join(half.sample.persons, on="person_id", how="anti").is_empty()


def test_event_quantiles_of_a_tally_equal_numpy_on_the_expanded_times():
    rng = np.random.default_rng(4)
    times = np.round(rng.exponential(200.0, 5_000))
    status = (rng.random(times.size) < 0.6).astype(np.int8)
    tally = (pl.DataFrame({"time": times, "event": status})
             .group_by("time", "event").agg(pl.len().cast(pl.Int64).alias("count")))
    expected = np.quantile(times[status == 1], np.linspace(0, 1, 400))
    np.testing.assert_allclose(event_quantiles(tally, 400), expected,
                               rtol=0, atol=1e-9)


def test_auto_resolution_counts_whole_days_only_for_large_partitioned_cohorts(
        directory, reference, monkeypatch):
    assert lazy.auto_resolution("auto", lazy.AUTO_RESOLUTION_PERSONS + 1) == 1.0
    assert lazy.auto_resolution("auto", lazy.AUTO_RESOLUTION_PERSONS) is None
    assert lazy.auto_resolution(0.5, 10**9) == 0.5 and lazy.auto_resolution(None, 10**9) is None
    dataset = read_partitioned(directory)
    monkeypatch.setattr(lazy, "AUTO_RESOLUTION_PERSONS", N - 1)
    auto = compare(dataset, reference, figures=False)
    assert auto.context["resolution (days)"].startswith("1 ")
    assert_same_checks(auto, compare(dataset, reference, figures=False, resolution=1.0))
    in_memory = compare(dataset.collect(), reference, figures=False)  # never rounded by auto
    assert "resolution (days)" not in in_memory.context
