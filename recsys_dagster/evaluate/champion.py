"""Which model gets published, and whether it may be: the champion choice and the publishing gate.

Champion = the candidate with the best NDCG@10 on the VALIDATION window (the test window only
reports, it never chooses), judged on the users the champion's list is served to: users with at
least ``settings.min_items_for_model()`` items before the window (publishing gives everyone else the fallback
list whoever is champion, so their lists cannot tell the candidates apart, and a candidate must not
win on lists nobody will be shown); all users when the window has fewer than ``MIN_SERVED_USERS``
of them (evaluate/assets.py: below it a few users' NDCG decides and its standard error means
nothing). With the one-standard-error rule: a candidate earlier in the preference
order (``CHAMPION_CANDIDATES``) whose NDCG@10 is within ``noise_se`` standard errors of the best is
preferred to it. A lead smaller than the luck of which users happened to fall into the window is
noise, and a model must not win on noise. SVD comes last, after the popularity baselines: on sparse
data it is barely better than a baseline (Amazon: a few thousandths of RMSE from surprise's BaselineOnly),
so it becomes champion only by leading every other candidate by more than ``noise_se`` standard errors. The gate compares the champion with the last published champion on the same
data window -- this run's validation window, on which the published artifact is scored again (its
validation fit, trained before its own, earlier cutoff) -- and refuses a drop of more than
``max_ndcg_drop`` (default 20%): a bad night (a broken feature, a degenerate fit, a bad tuning pick)
then keeps yesterday's tables instead of publishing worse ones. Comparing stored values instead would
only work on identical data: every night has new events, so such a gate would never fire.
Every decision is appended to ``ml.champion_decisions``; every publication to ``ml.published_runs``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import duckdb

from recsys_dagster.resources import table_exists
from recsys_dagster.models.matrix import table_fingerprint
from recsys_dagster.models.validation import VALIDATION_CUTOFF_TABLE

CHAMPION_K = 10
#: The champion metric: NDCG@10 on the validation window, all touched items relevant, over the served
#: users, or all users when too few are served (``model_evaluation`` writes it beside the all-users
#: ``val_ndcg@10``, with ``val_n_served_users`` and ``val_n_judged_users``).
CHAMPION_METRIC = f"val_ndcg@{CHAMPION_K}_served"
#: Its standard error over the window's users (written by model_evaluation beside the metric).
CHAMPION_SE_METRIC = f"{CHAMPION_METRIC}_se"
#: Default width of "within noise of the best", in standard errors of the best's NDCG@10.
DEFAULT_NOISE_SE = 1.0
#: Candidates in preference order: within noise of the best the earlier one wins. Personalised top-N models
#: before popularity; SVD last, so that it wins only by a lead beyond noise over every other candidate.
CHAMPION_CANDIDATES = (
    "repeat_aware_model",
    "als_model",
    "item_knn_model",
    "item_knn_bm25_model",
    "user_knn_model",
    "popularity_recent_model",
    "popularity_model",
    "svd_model",
)
DEFAULT_MAX_NDCG_DROP = 0.2
#: A drop of exactly the allowed share passes, whatever the float rounding of the floor.
FLOAT_TOLERANCE = 1e-12

DECISIONS_DDL = """
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE IF NOT EXISTS ml.champion_decisions (
    run_id VARCHAR, model VARCHAR, model_version VARCHAR, metric VARCHAR, value DOUBLE, data_window VARCHAR,
    repurchase BOOLEAN, baseline_run_id VARCHAR, baseline_value DOUBLE, passed BOOLEAN, reason VARCHAR,
    decided_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS ml.published_runs (
    run_id VARCHAR, model VARCHAR, model_version VARCHAR, metric VARCHAR, value DOUBLE, data_window VARCHAR,
    repurchase BOOLEAN, published_at TIMESTAMP
);
"""


@dataclass(frozen=True)
class ChampionChoice:
    run_id: str
    model: str
    model_version: str
    value: float


@dataclass(frozen=True)
class ChampionDecision:
    """The champion of one evaluation run and the gate's verdict on publishing it."""

    run_id: str
    model: str
    model_version: str
    metric: str
    value: float
    data_window: str
    repurchase: bool
    baseline_run_id: str | None
    baseline_value: float | None
    passed: bool
    reason: str
    decided_at: datetime


def select_champion(
    con: duckdb.DuckDBPyConnection,
    run_id: str | None = None,
    candidates: tuple[str, ...] | list[str] = CHAMPION_CANDIDATES,
    noise_se: float = DEFAULT_NOISE_SE,
) -> ChampionChoice:
    """The first candidate (in preference order) of run ``run_id`` (default: the latest run) whose
    validation NDCG@10 is within ``noise_se`` standard errors of the best one's (0 = strictly the best)."""
    if not table_exists(con, "ml.evaluation_runs"):
        raise LookupError("ml.evaluation_runs does not exist: materialize model_evaluation first")
    ordered = [model for model in CHAMPION_CANDIDATES if model in set(candidates)]
    rows = con.execute(
        """
        WITH chosen_run AS (
            SELECT coalesce(
                CAST($run_id AS VARCHAR),
                (SELECT run_id FROM ml.evaluation_runs GROUP BY run_id ORDER BY max(evaluated_at) DESC LIMIT 1)
            ) AS run_id
        ),
        run_rows AS (
            SELECT * FROM ml.evaluation_runs
            WHERE run_id = (SELECT run_id FROM chosen_run) AND list_contains($candidates, model)
        )
        SELECT m.run_id, m.model, m.model_version, m.value, coalesce(se.value, 0.0) AS se
        FROM run_rows m LEFT JOIN run_rows se ON se.model = m.model AND se.metric = $se_metric
        WHERE m.metric = $metric AND NOT isnan(m.value)
        ORDER BY list_position($candidates, m.model)
        """,
        {"run_id": run_id, "metric": CHAMPION_METRIC, "se_metric": CHAMPION_SE_METRIC, "candidates": ordered},
    ).fetchall()
    if not rows:
        which = f"run {run_id!r}" if run_id else "the latest evaluation run"
        raise LookupError(f"no {CHAMPION_METRIC} row for {ordered} in {which} of ml.evaluation_runs")
    best = max(rows, key=lambda row: row[3])
    floor = best[3] - noise_se * best[4]
    chosen = next(row for row in rows if row[3] >= floor - FLOAT_TOLERANCE)
    return ChampionChoice(run_id=chosen[0], model=chosen[1], model_version=chosen[2], value=float(chosen[3]))


def data_window(con: duckdb.DuckDBPyConnection) -> str:
    """Names the data a run was judged on (both cutoffs and a content hash of all interactions), recorded
    with every decision and publication so that a reader can tell which figures share their data."""
    cutoffs = con.execute(f"SELECT validation_cutoff, test_cutoff FROM {VALIDATION_CUTOFF_TABLE}").fetchone()
    return f"validation>={cutoffs[0]} test>={cutoffs[1]} data={table_fingerprint(con, 'fct_user_item_interactions')}"


@dataclass(frozen=True)
class PublishedRun:
    """The newest published champion: the run that published it and its registered artifact."""

    run_id: str
    model: str
    model_version: str


def last_publication(con: duckdb.DuckDBPyConnection) -> PublishedRun | None:
    """The newest publication judged on the champion metric (None before the first one)."""
    if not table_exists(con, "ml.published_runs"):
        return None
    rows = con.execute(  # fetchall: a half-read result would block the connection's next register()
        "SELECT run_id, model, model_version FROM ml.published_runs WHERE metric = ? ORDER BY published_at DESC LIMIT 1",
        [CHAMPION_METRIC],
    ).fetchall()
    return PublishedRun(*rows[0]) if rows else None


def gate_verdict(
    champion: ChampionChoice, baseline: tuple[str, float] | None, max_ndcg_drop: float
) -> tuple[bool, str]:
    """(passed, reason): refuse a champion more than ``max_ndcg_drop`` below ``baseline``: the last
    published champion's value re-scored on this run's validation window (run id, value)."""
    if baseline is None:
        return True, (f"no published champion to compare with on this window; "
                      f"{champion.model} {CHAMPION_METRIC}={champion.value:.4f}")
    baseline_run, baseline_value = baseline
    floor = (1.0 - max_ndcg_drop) * baseline_value
    if champion.value < floor - FLOAT_TOLERANCE:
        drop = 1.0 - champion.value / baseline_value
        return False, (
            f"champion {champion.model} {champion.model_version} has {CHAMPION_METRIC}={champion.value:.4f}, "
            f"{drop:.0%} below the last published run {baseline_run}'s champion on the same data window "
            f"({baseline_value:.4f}, re-scored on this run's validation window); the gate allows at most "
            f"{max_ndcg_drop:.0%}: previous tables kept"
        )
    return True, (
        f"{champion.model} {CHAMPION_METRIC}={champion.value:.4f} >= {floor:.4f} "
        f"({1 - max_ndcg_drop:.0%} of run {baseline_run}'s champion, {baseline_value:.4f} on this window)"
    )


def decide_champion(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    candidates: list[str],
    max_ndcg_drop: float,
    repurchase: bool,
    baseline: tuple[str, float] | None,
    noise_se: float = DEFAULT_NOISE_SE,
) -> ChampionDecision:
    """Choose the champion of ``run_id``, judge it against ``baseline`` (the last published champion
    re-scored on this run's validation window: ``evaluate.assets.incumbent_baseline``), record the decision."""
    champion = select_champion(con, run_id, candidates, noise_se)
    window = data_window(con)
    passed, reason = gate_verdict(champion, baseline, max_ndcg_drop)
    decision = ChampionDecision(
        run_id=run_id,
        model=champion.model,
        model_version=champion.model_version,
        metric=CHAMPION_METRIC,
        value=champion.value,
        data_window=window,
        repurchase=repurchase,
        baseline_run_id=baseline[0] if baseline else None,
        baseline_value=baseline[1] if baseline else None,
        passed=passed,
        reason=reason,
        decided_at=datetime.now(UTC).replace(tzinfo=None),
    )
    con.execute(DECISIONS_DDL)
    values = asdict(decision)
    con.execute(
        f"INSERT INTO ml.champion_decisions BY NAME SELECT {', '.join(f'${name} AS {name}' for name in values)}",
        values,
    )
    return decision


def latest_decision(con: duckdb.DuckDBPyConnection) -> ChampionDecision:
    """The newest champion decision (what the gate check reports and publishing obeys)."""
    if not table_exists(con, "ml.champion_decisions"):
        raise LookupError("ml.champion_decisions does not exist: materialize model_evaluation first")
    frame = con.execute("SELECT * FROM ml.champion_decisions ORDER BY decided_at DESC LIMIT 1").df()
    if frame.empty:
        raise LookupError("no champion decision recorded: materialize model_evaluation first")
    row = frame.astype(object).where(frame.notna(), None).iloc[0].to_dict()
    return ChampionDecision(**{**row, "decided_at": row["decided_at"].to_pydatetime()})


def record_publication(con: duckdb.DuckDBPyConnection, decision: ChampionDecision) -> None:
    """Append the published champion: the next run's gate compares against it."""
    con.execute(DECISIONS_DDL)
    con.execute(
        "INSERT INTO ml.published_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            decision.run_id,
            decision.model,
            decision.model_version,
            decision.metric,
            decision.value,
            decision.data_window,
            decision.repurchase,
            datetime.now(UTC).replace(tzinfo=None),
        ],
    )
