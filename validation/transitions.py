"""Transition structure of a cohort: counts, jump chain, sojourn times and state occupation.

Every function takes a :class:`~trajectories.cohort.Cohort` (or the frames these functions
return) and gives a polars DataFrame, so that a synthetic and a reference cohort can be put side
by side. The statistics are the ones a multi-state analysis of the reference would report: the
embedded jump chain (with a G-test of homogeneity per origin state), sojourn-time distributions
(Kaplan-Meier medians under censoring) and Aalen-Johansen state occupation probabilities.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl
from scipy import stats

from trajectories.cohort import Cohort
from trajectories.errors import TrajectoriesError
from trajectories.scenario import Scenario

ABSORBED_EXITS = ("death", "absorbed")
"""``persons.exit`` values meaning the path ended in an absorbing state."""

OCCUPATION_CHUNK = 1 << 15
"""Distinct jump times whose transition matrices are multiplied together in one numpy batch."""


# -- transition counts and the jump chain ------------------------------------------------------


def transition_counts(cohort: Cohort) -> pl.DataFrame:
    """Observed moves between consecutive state events: [from_state, to_state, count].

    Moves are counted as recorded (a repeated state or a second state at time 0 counts too), so
    that this table also exposes faulty paths.
    """
    return (
        cohort.state_spells()
        .filter(pl.col("next_state").is_not_null())
        .group_by(pl.col("state").alias("from_state"), pl.col("next_state").alias("to_state"))
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .sort("from_state", "to_state")
    )


def jump_chain(counts: pl.DataFrame) -> pl.DataFrame:
    """The embedded jump chain: ``counts`` plus ``probability`` = count / moves out of origin."""
    return counts.with_columns(
        (pl.col("count") / pl.col("count").sum().over("from_state")).alias("probability")
    )


def scenario_transitions(scenario: Scenario) -> set[tuple[str, str]]:
    """The (from, to) pairs a scenario declares: the allowed moves for its cohorts."""
    return {(t.from_state, t.to_state) for t in scenario.transitions}


def observed_transitions(counts: pl.DataFrame) -> set[tuple[str, str]]:
    """The (from, to) pairs present in a :func:`transition_counts` table (e.g. the reference)."""
    return set(counts.filter(pl.col("count") > 0).select("from_state", "to_state").iter_rows())


def compare_jump_chains(
    synthetic_counts: pl.DataFrame, reference_counts: pl.DataFrame
) -> pl.DataFrame:
    """Per origin state, a G-test that both cohorts leave it for the same targets alike.

    The test is the likelihood-ratio (G) test of homogeneity on the 2 x k table of moves
    (synthetic / reference by target), without continuity correction, as
    ``scipy.stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")``; targets
    neither cohort uses are dropped. One target left gives G = 0, dof = 0, p = 1. An origin that
    only one cohort leaves has no test: statistic, p and distance are null.
    ``total_variation`` is half the L1 distance between the two jump distributions.
    """
    keys = ["from_state", "to_state"]
    table = (
        synthetic_counts.select(*keys, pl.col("count").cast(pl.Float64).alias("o_syn"))
        .join(
            reference_counts.select(*keys, pl.col("count").cast(pl.Float64).alias("o_ref")),
            on=keys,
            how="full",
            coalesce=True,
        )
        .fill_null(0.0)
        .filter((pl.col("o_syn") + pl.col("o_ref")) > 0)
        .with_columns(
            pl.col("o_syn").sum().over("from_state").alias("n_syn"),
            pl.col("o_ref").sum().over("from_state").alias("n_ref"),
        )
    )
    total = pl.col("n_syn") + pl.col("n_ref")
    column_total = pl.col("o_syn") + pl.col("o_ref")

    def g_term(observed: str, row_total: str) -> pl.Expr:
        expected = pl.col(row_total) * column_total / total
        return (
            pl.when(pl.col(observed) > 0)
            .then(pl.col(observed) * (pl.col(observed) / expected).log())
            .otherwise(0.0)
        )

    per_origin = (
        table.with_columns(
            (2.0 * (g_term("o_syn", "n_syn") + g_term("o_ref", "n_ref"))).alias("g"),
            (pl.col("o_syn") / pl.col("n_syn") - pl.col("o_ref") / pl.col("n_ref"))
            .abs()
            .alias("gap"),
        )
        .group_by("from_state")
        .agg(
            pl.col("n_syn").first().cast(pl.Int64).alias("n_synthetic"),
            pl.col("n_ref").first().cast(pl.Int64).alias("n_reference"),
            pl.col("g").sum().alias("g_statistic"),
            (pl.len() - 1).cast(pl.Int64).alias("dof"),
            (0.5 * pl.col("gap").sum()).alias("total_variation"),
        )
        .sort("from_state")
    )
    testable = (pl.col("n_synthetic") > 0) & (pl.col("n_reference") > 0)
    per_origin = per_origin.with_columns(
        pl.when(testable).then(pl.col("g_statistic")).alias("g_statistic"),
        pl.when(testable).then(pl.col("total_variation")).alias("total_variation"),
    )
    g = per_origin.get_column("g_statistic").to_numpy().astype(float)
    dof = per_origin.get_column("dof").to_numpy()
    with np.errstate(invalid="ignore"):
        p = np.where(dof > 0, stats.chi2.sf(g, np.maximum(dof, 1)), 1.0)
    p = np.where(np.isnan(g), np.nan, p)
    return per_origin.with_columns(
        pl.Series("p_value", p, dtype=pl.Float64, nan_to_null=True)
    ).select(
        "from_state", "n_synthetic", "n_reference", "g_statistic", "dof", "p_value",
        "total_variation",
    )


def forbidden_transitions(
    cohort: Cohort, allowed: Iterable[tuple[str, str]], limit: int = 5
) -> pl.DataFrame:
    """Moves not in ``allowed``: [from_state, to_state, count, first_person_ids].

    ``allowed`` is typically :func:`scenario_transitions` or :func:`observed_transitions` of the
    reference; ``first_person_ids`` lists up to ``limit`` persons making the move, in table order.
    """
    allowed_frame = pl.DataFrame(
        list(allowed), schema={"from_state": pl.String, "to_state": pl.String}, orient="row"
    )
    return (
        cohort.state_spells()
        .filter(pl.col("next_state").is_not_null())
        .select("person_id", pl.col("state").alias("from_state"),
                pl.col("next_state").alias("to_state"))
        .join(allowed_frame, on=["from_state", "to_state"], how="anti")
        .group_by("from_state", "to_state", maintain_order=True)
        .agg(
            pl.len().cast(pl.Int64).alias("count"),
            pl.col("person_id").unique(maintain_order=True).head(limit).alias("first_person_ids"),
        )
        .sort("from_state", "to_state")
    )


# -- absorbing states and sojourn times --------------------------------------------------------


def infer_absorbing_states(cohort: Cohort) -> set[str]:
    """States that behave as absorbing in this cohort.

    A state is taken as absorbing when the spells that end a path in it (last state, entered at
    ``followup_end`` by a person whose exit is death or absorbed) outnumber the spells that
    leave it for another state. Robust to a few faulty paths; pass the scenario's absorbing
    states instead where they are known.
    """
    return absorbing_from_votes(absorbing_votes(cohort))


def absorbing_votes(cohort: Cohort) -> pl.DataFrame:
    """[state, terminal, left, initial]: the counts :func:`infer_absorbing_states` weighs,
    and the paths starting in each state; votes of disjoint parts of a cohort add up."""
    terminal = (
        pl.col("next_state").is_null()
        & (pl.col("start") == pl.col("stop"))
        & pl.col("exit").is_in(ABSORBED_EXITS)
    )
    return cohort.state_spells().group_by("state").agg(
        terminal.sum().cast(pl.Int64).alias("terminal"),
        pl.col("next_state").is_not_null().sum().cast(pl.Int64).alias("left"),
        pl.col("first").sum().cast(pl.Int64).alias("initial"),
    )


def absorbing_from_votes(votes: pl.DataFrame) -> set[str]:
    """States whose terminal spells outnumber the spells leaving them (see absorbing_votes)."""
    return set(votes.filter(pl.col("terminal") > pl.col("left")).get_column("state").to_list())


def sojourn_times(cohort: Cohort,
                  absorbing_states: Iterable[str] | None = None) -> pl.DataFrame:
    """Stays in transient states: [person_id, state, duration, completed].

    ``completed`` is true when the stay ended by a move to another state and false when it was
    censored by the end of follow-up. Spells of absorbing states (``absorbing_states``, default
    :func:`infer_absorbing_states`) are left out.
    """
    absorbing = (infer_absorbing_states(cohort) if absorbing_states is None
                 else set(absorbing_states))
    return (
        cohort.state_spells()
        .filter(~pl.col("state").is_in(list(absorbing)))
        .select(
            "person_id",
            "state",
            (pl.col("stop") - pl.col("start")).alias("duration"),
            pl.col("next_state").is_not_null().alias("completed"),
        )
    )


def kaplan_meier_medians(sojourns: pl.DataFrame, by: str = "state") -> pl.DataFrame:
    """Kaplan-Meier median of ``duration`` per ``by`` group, events = ``completed``.

    The median is the first time the survival curve falls to 0.5 or below, as lifelines'
    ``median_survival_time_``; null when the curve never gets there.
    """
    return medians_from_sojourn_counts(sojourn_counts(sojourns, by), by)


def sojourn_counts(sojourns: pl.DataFrame, by: str | list[str] = "state") -> pl.DataFrame:
    """[*by, duration, d, c]: completed stays (d) and all stays (c) per ``by`` and duration;
    counts of disjoint parts of a cohort add up (sum them per ``by`` and duration)."""
    keys = [by] if isinstance(by, str) else list(by)
    return sojourns.group_by(*keys, "duration").agg(
        pl.col("completed").sum().cast(pl.Int64).alias("d"), pl.len().cast(pl.Int64).alias("c")
    )


def medians_from_sojourn_counts(counts: pl.DataFrame, by: str = "state") -> pl.DataFrame:
    """:func:`kaplan_meier_medians` from :func:`sojourn_counts` (one row per ``by`` and
    duration: sum the counts of parts first)."""
    curve = (
        counts.sort(by, "duration")
        .with_columns(pl.col("c").cum_sum(reverse=True).over(by).alias("at_risk"))
        .with_columns((1.0 - pl.col("d") / pl.col("at_risk")).cum_prod().over(by).alias("s"))
    )
    medians = curve.filter(pl.col("s") <= 0.5).group_by(by).agg(
        pl.col("duration").min().alias("median")
    )
    return curve.select(by).unique().join(medians, on=by, how="left").sort(by)


def compare_sojourns(synthetic: pl.DataFrame, reference: pl.DataFrame) -> pl.DataFrame:
    """Per state, the two sojourn distributions (frames from :func:`sojourn_times`) compared.

    Columns: n_* (spells), completed_* (spells ending in a move), median_* (Kaplan-Meier, so
    censored stays count), and on completed stays only: the two-sample Kolmogorov-Smirnov
    statistic and p-value and the Wasserstein-1 distance (days). Tests are null where either
    side has no completed stay.
    """
    return compare_sojourn_counts(sojourn_counts(synthetic), sojourn_counts(reference))


KS_EXACT_MAX = 10_000
"""Up to this many completed stays on both sides the KS p-value is scipy's exact one (as
``ks_2samp``'s default method chooses); above, its asymptotic one."""


def compare_sojourn_counts(synthetic: pl.DataFrame, reference: pl.DataFrame) -> pl.DataFrame:
    """:func:`compare_sojourns` from :func:`sojourn_counts` tables (one row per state and
    duration: sum the counts of parts first), so that it serves cohorts read block by block.

    The KS statistic and Wasserstein distance are computed on the counted durations exactly as
    ``scipy.stats.ks_2samp`` and ``wasserstein_distance`` compute them on the stays themselves.
    """
    sides = {"synthetic": synthetic, "reference": reference}
    summary = None
    for side, counts in sides.items():
        part = (
            counts.group_by("state")
            .agg(
                pl.col("c").sum().cast(pl.Int64).alias(f"n_{side}"),
                pl.col("d").sum().cast(pl.Int64).alias(f"completed_{side}"),
            )
            .join(
                medians_from_sojourn_counts(counts).rename({"median": f"median_{side}"}),
                on="state",
                how="left",
            )
        )
        summary = part if summary is None else summary.join(
            part, on="state", how="full", coalesce=True
        )
    summary = summary.with_columns(
        pl.col(c).fill_null(0) for c in summary.columns if c.startswith(("n_", "completed_"))
    ).sort("state")
    tests = []
    for state in summary.get_column("state").to_list():
        a, b = (
            counts.filter((pl.col("state") == state) & (pl.col("d") > 0))
            .group_by("duration").agg(pl.col("d").sum()).sort("duration")
            for counts in sides.values()
        )
        if a.height and b.height:
            tests.append((state, *_counted_two_sample_tests(a, b)))
        else:
            tests.append((state, None, None, None))
    test_frame = pl.DataFrame(
        tests,
        schema={"state": pl.String, "ks_statistic": pl.Float64, "ks_p_value": pl.Float64,
                "wasserstein": pl.Float64},
        orient="row",
    )
    return summary.join(test_frame, on="state", how="left")


def _counted_two_sample_tests(a: pl.DataFrame, b: pl.DataFrame) -> tuple[float, float, float]:
    """KS statistic, KS p-value and Wasserstein-1 distance of two [duration, d] tables."""
    values_a, weights_a = a.get_column("duration").to_numpy(), a.get_column("d").to_numpy()
    values_b, weights_b = b.get_column("duration").to_numpy(), b.get_column("d").to_numpy()
    n_a, n_b = int(weights_a.sum()), int(weights_b.sum())
    wasserstein = float(stats.wasserstein_distance(values_a, values_b, weights_a, weights_b))
    if max(n_a, n_b) <= KS_EXACT_MAX:
        ks = stats.ks_2samp(np.repeat(values_a, weights_a), np.repeat(values_b, weights_b))
        return float(ks.statistic), float(ks.pvalue), wasserstein
    at = np.union1d(values_a, values_b)
    cdf_a = np.cumsum(weights_a)[np.searchsorted(values_a, at, side="right") - 1] / n_a
    cdf_b = np.cumsum(weights_b)[np.searchsorted(values_b, at, side="right") - 1] / n_b
    cdf_a[at < values_a[0]] = 0.0
    cdf_b[at < values_b[0]] = 0.0
    statistic = float(np.max(np.abs(cdf_a - cdf_b)))
    # scipy's asymptotic two-sided rule: Kolmogorov's distribution at n = n_a n_b / (n_a + n_b)
    high, low = max(n_a, n_b), min(n_a, n_b)
    p = float(np.clip(stats.kstwo.sf(statistic, np.round(high * low / (high + low))), 0, 1))
    return statistic, p, wasserstein


# -- Aalen-Johansen state occupation -----------------------------------------------------------


def _segment_products(matrices: np.ndarray, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ordered product of the (S, S) matrices of each run of equal ``segment`` ids.

    ``segment`` is sorted; returns one product per run and its id. Pairwise reduction: each
    round multiplies neighbours of a run in one numpy batch and halves it, so the work is
    about one matrix product per input matrix.
    """
    while True:
        n = segment.size
        boundary = np.flatnonzero(np.r_[True, segment[1:] != segment[:-1]])
        if boundary.size == n:
            return matrices, segment
        position = np.arange(n) - np.repeat(boundary, np.diff(np.r_[boundary, n]))
        even = position % 2 == 0
        paired = np.flatnonzero(even & np.r_[segment[1:] == segment[:-1], False])
        matrices[paired] = matrices[paired] @ matrices[paired + 1]
        matrices, segment = matrices[even], segment[even]


def _count_before(sorted_times: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_times, t, side="left")


def state_occupation(
    cohort: Cohort, grid: Iterable[float], chunk_size: int = OCCUPATION_CHUNK
) -> pl.DataFrame:
    """Aalen-Johansen state occupation probabilities at ``grid`` times: [time, state, probability].

    p(t) = p(0) * prod over jump times s <= t of (I + dA(s)), where p(0) is the share of persons
    in each state just after time 0 and dA(s)[h, k] = (moves h -> k at s) / (at risk in h just
    before s); a person is at risk in h on (start, stop] of a spell, so censored persons count
    at their censoring time. Without censoring this is the empirical share in each state; with
    one transient and one absorbing state, occupation of the transient one is Kaplan-Meier.
    After the last jump the estimate stays constant. Several state events of a person at one
    instant count as one move to the last of them; a repeated state is no move.

    Vectorised: the (states x states) matrices of up to ``chunk_size`` distinct jump times at a
    time are multiplied within each grid interval by pairwise reduction in numpy batches; only
    the products between grid times are carried on sequentially.
    """
    grid = np.asarray(grid if isinstance(grid, np.ndarray) else list(grid), dtype=float)
    if grid.ndim != 1 or not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise TrajectoriesError("state_occupation: grid must be finite times >= 0 (days)")
    if chunk_size < 1:
        raise TrajectoriesError(f"state_occupation: chunk_size must be >= 1, got {chunk_size}")
    spells = cohort.state_spells(collapse_instants=True)
    names = sorted(spells.get_column("state").unique().to_list())
    if not names:
        raise TrajectoriesError("state_occupation: the cohort has no 'state:' events")
    n_states = len(names)
    enum = pl.Enum(names)
    coded = spells.select(
        pl.col("state").cast(enum).to_physical().cast(pl.Int64).alias("h"),
        pl.col("next_state").cast(enum).to_physical().cast(pl.Int64).alias("k"),
        "start", "stop", "first",
    )
    # A repeated state (h -> h) is no move: the person stays at risk in h.
    jumps = (
        coded.filter(pl.col("k").is_not_null() & (pl.col("k") != pl.col("h")))
        .select("stop", "h", "k")
        .sort("stop", maintain_order=True)
    )
    jump_time = jumps.get_column("stop").to_numpy()
    jump_from = jumps.get_column("h").to_numpy()
    jump_to = jumps.get_column("k").to_numpy()
    first = coded.filter(pl.col("first")).select("h", "start")
    last = coded.filter(pl.col("k").is_null()).select("h", "stop")
    first_state = first.get_column("h").to_numpy()
    p0 = np.bincount(first_state, minlength=n_states) / first_state.size

    # At risk in h just before t: entered h before t (first spell or a jump in) minus left it
    # before t (a jump out, or the end of the last spell: censoring or absorption). A move with
    # nobody at risk (only with rows out of time order) is ignored.
    increment = np.zeros(jump_time.size)
    for s in range(n_states):
        mine = jump_from == s
        t = jump_time[mine]
        entered = _count_before(np.sort(first.filter(pl.col("h") == s)["start"].to_numpy()), t)
        entered += _count_before(jump_time[jump_to == s], t)
        left = _count_before(jump_time[mine], t)
        left += _count_before(np.sort(last.filter(pl.col("h") == s)["stop"].to_numpy()), t)
        at_risk = (entered - left).astype(float)
        increment[mine] = np.divide(1.0, at_risk, out=np.zeros_like(at_risk), where=at_risk > 0)

    # Only jumps up to the last grid time matter; segment i holds jump times in
    # (grid[i - 1], grid[i]] of the sorted grid.
    order = np.argsort(grid, kind="stable")
    sorted_grid = grid[order]
    keep = jump_time <= (sorted_grid[-1] if grid.size else -np.inf)
    jump_time, jump_from, jump_to, increment = (
        jump_time[keep], jump_from[keep], jump_to[keep], increment[keep]
    )
    new_time = np.ones(jump_time.size, dtype=bool)
    new_time[1:] = jump_time[1:] != jump_time[:-1]
    times, which = jump_time[new_time], np.cumsum(new_time) - 1
    time_segment = np.searchsorted(sorted_grid, times, side="left")

    at_segment = np.full((grid.size, n_states), np.nan)
    carry = p0
    diagonal = np.arange(n_states)
    for a in range(0, times.size, chunk_size):
        b = min(a + chunk_size, times.size)
        lo, hi = np.searchsorted(which, [a, b], side="left")
        flat = ((which[lo:hi] - a) * n_states + jump_from[lo:hi]) * n_states + jump_to[lo:hi]
        step = np.bincount(
            flat, weights=increment[lo:hi], minlength=(b - a) * n_states * n_states
        ).reshape(b - a, n_states, n_states)
        step[:, diagonal, diagonal] = 1.0 - step.sum(axis=2)
        products, segments = _segment_products(step, time_segment[a:b])
        for product, segment in zip(products, segments, strict=True):
            carry = carry @ product
            at_segment[segment] = carry
    # A grid time whose interval holds no jump keeps the value of the one before (p0 at first).
    filled = ~np.isnan(at_segment[:, 0])
    source = np.maximum.accumulate(np.where(filled, np.arange(grid.size), -1)) + 1
    result = np.empty((grid.size, n_states))
    result[order] = np.vstack([p0, at_segment])[source]
    return pl.DataFrame({
        "time": np.repeat(grid, n_states),
        "state": pl.Series(np.tile(np.array(names, dtype=object), grid.size), dtype=pl.String),
        "probability": result.reshape(-1),
    })


def occupation_difference(occ_a: pl.DataFrame, occ_b: pl.DataFrame) -> float:
    """Largest absolute difference in occupation probability over grid times and states.

    A state present on one side only counts as probability 0 on the other.
    """
    keys = ["time", "state"]
    joined = occ_a.select(*keys, pl.col("probability").alias("a")).join(
        occ_b.select(*keys, pl.col("probability").alias("b")), on=keys, how="full",
        coalesce=True,
    ).fill_null(0.0)
    if joined.height == 0:
        return 0.0
    return float(joined.select((pl.col("a") - pl.col("b")).abs().max()).item())
