"""The canary analysis (shared.canary): the verdict table, its guards and properties, the
step plan, and a small seeded run of the benchmark's simulation (docs/canary.md)."""

from __future__ import annotations

import importlib
import json
import math
import os
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.canary import (
    Action,
    AnalysisConfig,
    Evidence,
    Histogram,
    Interval,
    Sample,
    StepPlan,
    Verdict,
    analyse,
    exponential_bounds,
    fold,
    linear_bounds,
    next_step,
    start,
)

#: explicit bounds (ms); slow = at or above 200 ms, where the stable revision's p95 sits
BOUNDS = (50.0, 100.0, 200.0, 400.0, 800.0)
CONFIG = AnalysisConfig()


def latency(requests: int, slow: int) -> Histogram:
    """``requests`` answered in 100..200 ms, ``slow`` of them in 200..400 ms instead."""
    return Histogram(BOUNDS, (0, 0, requests - slow, slow))


def minute(
    canary: tuple[int, int, int],
    stable: tuple[int, int, int],
) -> Interval:
    """One interval: (requests, 5xx, slow requests) for canary and stable."""
    return Interval(
        Sample(canary[0], canary[1], latency(canary[0], canary[2])),
        Sample(stable[0], stable[1], latency(stable[0], stable[2])),
    )


@dataclass
class Case:
    interval: Interval
    minutes: int
    verdict: Verdict
    decided_at: int | None = None
    errors: str = ""  # expected outcome of each test ("" = don't care)
    latency: str = ""
    reason: str = ""
    baseline: Histogram | None = None


def slow_case(decided_at: int, baseline: Histogram | None = None) -> Case:
    """40 % of the canary's requests at or above 200 ms, 5 % of the stable's."""
    slow = minute((1000, 5, 400), (3000, 15, 150))
    reason = "worse than stable on latency"
    return Case(slow, 10, Verdict.ROLLBACK, decided_at, "", "worse", reason, baseline)


# 25 % on the canary: 1,000 canary and 3,000 stable requests a minute
HEALTHY = minute((1000, 5, 50), (3000, 15, 150))
CASES = {
    "clear_good_canary_promotes_the_step": Case(
        HEALTHY, 10, Verdict.PROMOTE_STEP, 2, "not_worse", "not_worse", "not worse than stable"
    ),
    "clear_bad_canary_is_rolled_back_at_the_first_interval": Case(
        minute((1000, 50, 50), (3000, 15, 150)),
        10,
        Verdict.ROLLBACK,
        1,
        "worse",
        "",
        "worse than stable on errors",
    ),
    "too_little_data_gives_no_verdict_even_at_a_high_error_rate": Case(
        minute((20, 2, 1), (380, 2, 19)), 1, Verdict.CONTINUE, None, "undecided"
    ),
    # with the stable's 30 minutes before the step as the latency baseline
    "latency_only_regression_is_rolled_back_on_latency": slow_case(1, latency(30_000, 1500)),
    # the first interval has no stable history: the pooled p95 (pulled up to 400 ms by
    # the slow canary) is all it has; from the second on, the stable's own p95
    "latency_regression_without_a_baseline_is_judged_from_the_second_interval": slow_case(2),
    "stable_itself_bad_so_an_equally_bad_canary_is_not_blamed": Case(
        minute((1000, 50, 50), (3000, 150, 150)),
        10,
        Verdict.PROMOTE_STEP,
        1,
        "not_worse",
        "not_worse",
    ),
    "canary_better_than_stable_promotes": Case(
        minute((1000, 0, 40), (3000, 30, 150)), 10, Verdict.PROMOTE_STEP, 1, "not_worse"
    ),
    "zero_canary_traffic_waits": Case(
        Interval(Sample(0, 0, None), Sample(3000, 15, latency(3000, 150))),
        30,
        Verdict.CONTINUE,
        None,
        "no_data",
        "no_data",
        "no canary traffic yet",
    ),
    "zero_stable_traffic_waits": Case(
        Interval(Sample(1000, 5, latency(1000, 50)), Sample(0, 0, None)),
        30,
        Verdict.CONTINUE,
        None,
        "no_data",
        "no_data",
        "no stable traffic to compare with",
    ),
    "no_traffic_at_all_waits": Case(
        Interval(Sample(0, 0, None), Sample(0, 0, None)),
        5,
        Verdict.CONTINUE,
        None,
        "no_data",
        "no_data",
    ),
    "promotion_waits_for_the_minimum_canary_requests": Case(
        # the tests pass within minutes; 100 canary requests take 10
        minute((10, 0, 0), (3000, 300, 150)),
        10,
        Verdict.PROMOTE_STEP,
        10,
        "not_worse",
        "not_worse",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_verdict_table(case: Case) -> None:
    evidence = analyse([case.interval] * case.minutes, baseline=case.baseline)
    assert evidence.verdict is case.verdict, evidence.summary()
    assert evidence.decided_at == case.decided_at
    if case.errors:
        assert evidence.errors.outcome == case.errors
    if case.latency:
        assert evidence.latency.outcome == case.latency
    assert case.reason in evidence.reason


def test_promotion_before_the_minimum_requests_says_what_it_waits_for() -> None:
    evidence = analyse([CASES["promotion_waits_for_the_minimum_canary_requests"].interval] * 9)
    assert evidence.verdict is Verdict.CONTINUE
    assert evidence.reason == "90 of 100 canary requests before a promotion"


def test_a_verdict_stops_the_test_later_intervals_change_nothing() -> None:
    bad = CASES["clear_bad_canary_is_rolled_back_at_the_first_interval"].interval
    decided = analyse([bad])
    assert analyse([bad, HEALTHY, HEALTHY, HEALTHY]) == decided
    state = fold(fold(start(), bad), HEALTHY)
    assert state.evidence == decided and state.intervals == 1


def test_the_rollback_evidence_carries_counts_rates_and_thresholds() -> None:
    evidence = analyse([CASES["clear_bad_canary_is_rolled_back_at_the_first_interval"].interval])
    errors = evidence.errors
    assert (errors.canary_requests, errors.canary_events) == (1000, 50)
    assert (errors.stable_requests, errors.stable_events) == (3000, 15)
    assert errors.canary_rate == 0.05 and errors.stable_rate == 0.005
    assert errors.ratio == pytest.approx(10.0)
    # no step given: equal shares, the errors test's 80 % of a third of 1 %
    assert errors.rollback_at == pytest.approx(math.log(1 / (0.01 / 3 * 0.8)), abs=1e-4)
    assert errors.log_lr_worse >= errors.rollback_at
    assert evidence.latency.threshold_ms == 200.0
    record = json.loads(json.dumps(evidence.as_json()))
    assert record["verdict"] == "rollback"
    assert record["errors"]["ratio"] == pytest.approx(10.0)
    assert record["errors"]["outcome"] == "worse"
    assert "canary 50/1000 5xx (5.00%)" in evidence.summary()


#: config -> the errors test's alpha per analysed step (the latency test's is a quarter
#: of it: 80 / 20)
BUDGETS = {
    "default_half_to_the_first_step": (AnalysisConfig(), (0.004, 0.002, 0.002)),
    "one_analysed_step_gets_it_all": (AnalysisConfig(analysed_steps=1), (0.008,)),
    "four_steps_share_the_other_half": (
        AnalysisConfig(analysed_steps=4),
        (0.004, 0.008 / 6, 0.008 / 6, 0.008 / 6),
    ),
    "weights_as_given": (
        AnalysisConfig(false_rollback=0.02, step_weights=(0.6, 0.3, 0.1)),
        (0.0096, 0.0048, 0.0016),
    ),
}


@pytest.mark.parametrize(("config", "errors"), BUDGETS.values(), ids=BUDGETS.keys())
def test_the_false_rollback_budget_is_spent_over_steps_and_tests_and_sums_to_the_stated_rate(
    config: AnalysisConfig, errors: tuple[float, ...]
) -> None:
    """Ville's inequality bounds each test in each step by its alpha, the union bound the
    release by their sum: it must be ``false_rollback``, step by step or in equal shares."""
    steps = range(config.analysed_steps)
    assert [config.alpha_of("errors", k) for k in steps] == pytest.approx(list(errors))
    assert [config.alpha_of("latency", k) for k in steps] == pytest.approx([e / 4 for e in errors])
    for chosen in (list(steps), [None] * config.analysed_steps):
        spent = sum(config.alpha_of(t, k) for t in ("errors", "latency") for k in chosen)
        assert spent == pytest.approx(config.false_rollback)
    assert config.rollback_at_of("errors", 0) == pytest.approx(math.log(1 / errors[0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alternatives": (0.5, 2.0)}, "above 1"),
        ({"step_weights": (0.5, 0.5)}, "3 weights"),
        ({"step_weights": (0.5, 0.3, 0.1)}, "sum to 1"),
        ({"step_weights": (1.0, 0.0, 0.0)}, "positive"),
        ({"errors_share": 1.0}, "errors_share"),
    ],
)
def test_budgets_that_do_not_add_up_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AnalysisConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not one of the 3 analysed"):
        start(step=3)


def test_the_first_step_rolls_back_on_evidence_a_later_step_waits_for() -> None:
    """7 of 150 canary requests failing at 5 % against 19 of 2,850 (about 7x): log LR
    5.87, past the first step's 5.52 (half the budget) but short of 5.93 (equal shares)
    and of the later steps' 6.21 (a quarter each)."""
    borderline = minute((150, 7, 4), (2850, 19, 75))
    first = analyse([borderline], step=0)
    assert first.verdict is Verdict.ROLLBACK
    assert first.errors.log_lr_worse == pytest.approx(5.87, abs=0.01)
    assert first.errors.rollback_at == pytest.approx(math.log(250), abs=1e-4)
    assert first.latency.rollback_at == pytest.approx(math.log(1000), abs=1e-4)
    assert analyse([borderline]).verdict is Verdict.CONTINUE
    later = analyse([borderline], step=1)
    assert later.verdict is Verdict.CONTINUE
    assert later.errors.rollback_at == pytest.approx(math.log(500), abs=1e-4)


# ---------------------------------------------------------------- properties

counts = st.integers(min_value=0, max_value=5000)


@st.composite
def intervals(draw: st.DrawFn, max_canary: int = 5000) -> Interval:
    c_req = draw(st.integers(0, max_canary))
    s_req = draw(counts)
    return minute(
        (c_req, draw(st.integers(0, c_req)), draw(st.integers(0, c_req))),
        (s_req, draw(st.integers(0, s_req)), draw(st.integers(0, s_req))),
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(intervals(max_canary=12), min_size=1, max_size=4))
def test_never_rollback_below_the_minimum_canary_requests(seq: list[Interval]) -> None:
    """At most 48 canary requests in all: under the 50 a rollback needs, whatever the
    error and latency figures."""
    assert analyse(seq).verdict is not Verdict.ROLLBACK


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(50, 3000), st.integers(0, 1), st.integers(0, 1)),
        min_size=1,
        max_size=2,
    ),
    st.integers(100, 5000),
)
def test_never_rollback_below_the_minimum_canary_events(
    canary: list[tuple[int, int, int]], stable: int
) -> None:
    """At most 2 canary 5xx and 2 slow canary requests: under the 3 events a rollback
    needs, even against a stable revision without any."""
    seq = [minute(c, (stable, 0, 0)) for c in canary]
    assert analyse(seq).verdict is not Verdict.ROLLBACK


DECIDED = {name: case for name, case in CASES.items() if case.verdict is not Verdict.CONTINUE}


@pytest.mark.parametrize("case", DECIDED.values(), ids=DECIDED.keys())
@pytest.mark.parametrize("factor", [2, 5, 20])
def test_more_evidence_never_flips_a_clear_verdict(case: Case, factor: int) -> None:
    """The same rates over ``factor`` times the requests: the same verdict, no later."""
    c, s = case.interval.canary, case.interval.stable

    def scaled(sample: Sample) -> Sample:
        hist = sample.latency
        assert hist is not None
        return Sample(
            sample.requests * factor,
            sample.errors * factor,
            Histogram(hist.bounds, tuple(n * factor for n in hist.counts)),
        )

    evidence = analyse([Interval(scaled(c), scaled(s))] * case.minutes, baseline=case.baseline)
    assert evidence.verdict is case.verdict
    assert evidence.decided_at is not None and case.decided_at is not None
    assert evidence.decided_at <= case.decided_at


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 5), st.integers(1, 20))
def test_a_clearly_bad_canary_stays_rolled_back_whatever_healthy_minutes_follow(
    before: int, after: int
) -> None:
    bad = CASES["clear_bad_canary_is_rolled_back_at_the_first_interval"].interval
    quiet = minute((1000, 5, 50), (3000, 15, 150))
    evidence = analyse([quiet] * before + [bad] + [quiet] * after)
    # the healthy minutes before the bad one may already promote the step (2 minutes)
    if before < 2:
        assert evidence.verdict is Verdict.ROLLBACK
        assert evidence.decided_at == before + 1


# ---------------------------------------------------------------- histograms


def test_bucket_bounds_follow_cloud_monitorings_bucket_options() -> None:
    assert exponential_bounds(3, 2.0, 10.0) == (10.0, 20.0, 40.0, 80.0)
    assert linear_bounds(2, 5.0, 1.0) == (1.0, 6.0, 11.0)


def test_bucket_counts_may_stop_early_and_count_from_a_boundary() -> None:
    hist = Histogram(BOUNDS, (1, 2, 90, 7))  # buckets above 400 ms left out: empty
    assert hist.padded() == (1, 2, 90, 7, 0, 0)
    assert hist.at_or_above(2) == 7
    assert hist.quantile_bound(0.95) == 400.0  # 7 % at or above 200 ms: p95 below 400
    assert Histogram(BOUNDS, (0, 0, 0, 0, 0, 5)).quantile_bound(0.95) is None  # overflow
    assert Histogram(BOUNDS, ()).quantile_bound(0.95) is None


@pytest.mark.parametrize(
    ("bounds", "counts", "message"),
    [
        ((1.0, 2.0), (1, 1, 1, 1), "at most 3"),
        ((2.0, 1.0), (1,), "increase"),
        ((1.0, 2.0), (1, -1), "negative"),
    ],
)
def test_malformed_histograms_are_refused(
    bounds: tuple[float, ...], counts: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Histogram(bounds, counts)


def test_samples_count_5xx_as_errors_and_nothing_else() -> None:
    sample = Sample.from_classes({"2xx": 90, "3xx": 3, "4xx": 5, "5xx": 2})
    assert (sample.requests, sample.errors) == (100, 2)
    with pytest.raises(ValueError, match="errors"):
        Sample(1, 2)


def test_histograms_of_one_step_must_share_their_bounds() -> None:
    other = Interval(
        Sample(10, 0, Histogram((1.0, 2.0), (10,))), Sample(10, 0, Histogram((1.0, 2.0), (10,)))
    )
    with pytest.raises(ValueError, match="bucket bounds"):
        analyse([HEALTHY, other])


# ---------------------------------------------------------------- the step plan

PLAN = StepPlan()
LIMIT = PLAN.max_step_time


def evidence_for(name: str, minutes: int | None = None) -> Evidence:
    case = CASES[name]
    return analyse([case.interval] * (case.minutes if minutes is None else minutes))


BAD, GOOD = (
    "clear_bad_canary_is_rolled_back_at_the_first_interval",
    "clear_good_canary_promotes_the_step",
)
FEW, NONE = "promotion_waits_for_the_minimum_canary_requests", "zero_canary_traffic_waits"
STEP_CASES = {
    "rollback_goes_to_zero": (5, BAD, None, 1, Action.ROLLBACK, 0),
    "promote_step_moves_to_the_next_step": (5, GOOD, None, 1, Action.STEP, 25),
    "promote_step_at_50_promotes": (50, GOOD, None, 1, Action.PROMOTE, 100),
    "continue_before_the_limit_waits": (25, GOOD, 1, 29, Action.WAIT, 25),
    "continue_at_the_limit_below_the_minimum_requests_holds": (25, FEW, 1, 30, Action.HOLD, 25),
    "no_traffic_at_the_limit_holds": (5, NONE, None, 30, Action.HOLD, 5),
}


@pytest.mark.parametrize(
    ("percent", "name", "minutes", "elapsed", "action", "after"),
    STEP_CASES.values(),
    ids=STEP_CASES.keys(),
)
def test_step_plan_table(
    percent: int, name: str, minutes: int | None, elapsed: int, action: Action, after: int
) -> None:
    decision = next_step(PLAN, percent, evidence_for(name, minutes), timedelta(minutes=elapsed))
    assert (decision.action, decision.percent) == (action, after)


def test_at_the_time_limit_a_canary_leaning_not_worse_moves_on() -> None:
    # a quiet service: 100 canary requests, none failed, against 2 of 300; 5 and 15
    # slow: both tests lean "not worse", neither has passed
    lean = minute((100, 0, 5), (300, 2, 15))
    evidence = analyse([lean])
    assert evidence.verdict is Verdict.CONTINUE and evidence.leans_not_worse
    decision = next_step(PLAN, 25, evidence, LIMIT)
    assert (decision.action, decision.percent) == (Action.STEP, 50)
    assert "no verdict after 30 min at 25%" in decision.reason


def test_at_the_time_limit_a_canary_leaning_worse_holds_and_is_never_rolled_back() -> None:
    lean_worse = minute((100, 2, 5), (300, 2, 15))
    evidence = analyse([lean_worse])
    assert evidence.verdict is Verdict.CONTINUE and not evidence.leans_not_worse
    decision = next_step(PLAN, 5, evidence, LIMIT + timedelta(minutes=5))
    assert (decision.action, decision.percent) == (Action.HOLD, 5)
    assert "holding for a human" in decision.reason


def test_step_plans_are_per_service_and_validated() -> None:
    plan = StepPlan((10, 100), timedelta(minutes=10))
    assert plan.analysed_steps == 1 and plan.after(10) == 100
    good = evidence_for("clear_good_canary_promotes_the_step")
    assert next_step(plan, 10, good, timedelta(0)).action is Action.PROMOTE
    for steps in [(5, 50), (50, 25, 100), (0, 100), ()]:
        with pytest.raises(ValueError, match="steps"):
            StepPlan(steps)
    with pytest.raises(ValueError, match="not a step"):
        next_step(PLAN, 30, good, timedelta(0))


def test_the_package_exports_every_name_lazily() -> None:
    module = importlib.import_module("shared.canary")
    assert [name for name in module.__all__ if not hasattr(module, name)] == []


# ---------------------------------------------------------------- the benchmark, small


#: A/A runs: 100 in ``make test``; ``make proof`` runs the benchmark's 1,000
AA_RUNS = int(os.environ.get("CANARY_AA_RUNS", "100"))


@pytest.mark.parametrize("policy", ["ours@1m", "ours@10s", "ours(prod)"])
def test_aa_runs_of_the_benchmark_stay_within_the_false_rollback_bound(policy: str) -> None:
    """Seeded A/A runs of bench/canary.py's simulation (the canary is the stable
    revision again), analysed every minute, every 10 s, and as production does (the
    first step from the request logs every 10 s, 10 s late; later steps from Monitoring
    every minute, 3 minutes late): healthy canaries are promoted, and false rollbacks
    stay within the stated 1 % per release (at least 3 allowed for sampling noise on a
    small run; a test whose real rate were 5 % would fail here)."""
    from bench.canary import simulate

    tally = simulate("healthy (A/A)", AA_RUNS, seed=3, policies=[policy])
    results = tally.results[policy]
    rolled_back = sum(r.outcome == "rolled back" for r in results)
    promoted = sum(r.outcome == "promoted" for r in results)
    assert rolled_back <= max(3, AA_RUNS // 100)
    assert promoted >= 0.95 * AA_RUNS


@pytest.mark.parametrize("policy", ["ours@10s", "ours(prod)"])
def test_small_run_of_the_benchmark_rolls_a_5_percent_canary_back_early(policy: str) -> None:
    """Analysed every 10 s over fresh data, and as production does (request logs 10 s
    late on the first step), within the issue's fifth of flagger@1m's failed requests.
    Production's margin is thin: 0.19 over the benchmark's 200 runs (docs/benchmarks.md,
    "Canary"), 0.19 on this seed."""
    from bench.canary import simulate

    tally = simulate("errors 5%", 20, seed=3, policies=["flagger@1m", "ours@1m", policy])
    ours, flagger = tally.results[policy], tally.results["flagger@1m"]
    assert all(r.outcome == "rolled back" for r in ours + tally.results["ours@1m"])
    failed = sum(r.canary_failed for r in ours) / sum(r.canary_failed for r in flagger)
    assert failed <= 0.2
    assert max(r.time_s for r in ours) <= 180


def test_the_benchmarks_log_sampling_thins_a_busy_stable_and_keeps_its_error_rate() -> None:
    """ours(prod) reads the first step's stable at 100 requests/s at most, as production
    samples the request logs: at 200 requests/s half of them, one draw per request (a
    kept request keeps its outcome), the canary whole, the same sample on every read;
    at 50 requests/s all of them; Monitoring's later steps all of them."""
    from bench.canary import SCENARIOS, Traffic, ours_prod

    busy = Traffic(5, SCENARIOS["errors 5%"], 200.0)
    policy = ours_prod()
    policy.begin(busy)
    assert policy.stable_fraction() == pytest.approx(0.5, rel=0.01)
    whole = [busy.interval(i, 5) for i in range(60)]
    sampled = [busy.interval(i, 5, 0.5) for i in range(60)]
    assert sampled == [busy.interval(i, 5, 0.5) for i in range(60)]
    assert [s.canary for s in sampled] == [w.canary for w in whole]
    kept, served = (sum(i.stable.requests for i in group) for group in (sampled, whole))
    kept_errors, errors = (sum(i.stable.errors for i in group) for group in (sampled, whole))
    assert kept / served == pytest.approx(0.5, abs=0.02)
    assert kept_errors / kept == pytest.approx(errors / served, rel=0.15)
    for interval in sampled:
        latency = interval.stable.latency
        assert latency is not None and latency.total == interval.stable.requests
    quiet = ours_prod()
    quiet.begin(Traffic(5, SCENARIOS["errors 5%"], 50.0))
    assert quiet.stable_fraction() == 1.0
    policy.share = 25  # Cloud Monitoring: every minute, 3 minutes late, no sampling
    assert (policy.cadence_s, policy.source.delay_s, policy.stable_fraction()) == (60, 180, 1.0)
