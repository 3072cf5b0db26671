"""Where every number of the event generator comes from, and the SQL that measures it on real logs.

No genuine RetailRocket events sample exists offline, so the generator takes its *totals* from the
published RetailRocket figures and its *shapes* from the two real e-commerce logs in
``../shared/datasets`` (see each folder's PROVENANCE.md). The shape parameters below are frozen
constants, so generation never depends on those files and stays byte-for-byte reproducible;
``python -m bench.calibration`` re-measures every one of them from the real logs with DuckDB.

Totals: RetailRocket ``events.csv`` as published (Kaggle "Retailrocket recommender system dataset")
- 2,756,101 events = 2,664,312 view + 69,332 addtocart + 22,457 transaction; 1,407,580 visitors;
  235,061 items (taken as the catalog size); 2015-05-03 .. 2015-09-18 (138 days).
- The day boundaries are put at midnight UTC+3 (assumption: RetailRocket is a Moscow company).
- ``LIVE_ITEM_SHARE`` = 0.5 of the catalog receives traffic, so that ~100k items get events at full
  size (98,657 with seed 0), the figure of the issue's bare ALS run (102k items); the rest of the
  catalog never gets an event (it still counts for full-catalog scoring).
- ``CATEGORIES_PER_ITEM`` = 1,669 / 235,061: the genuine RetailRocket ``category_tree.csv`` has 1,669
  categories.

Shapes (values measured by ``measure_shapes`` on the files named; logs read with ``REAL_LOGS``):
- Item popularity: per-item event counts are fitted by a zero-truncated Poisson-lognormal. The
  log-sd of item popularity is the same in all three real samples: Taobao window 1.74, Taobao
  full histories 1.67, REES46 1.73 -> ``ITEM_POPULARITY_SIGMA`` = 1.73 (REES46).
- User activity: per-visitor events minus one are fitted by a Poisson-lognormal: Taobao window
  log-sd 1.13, REES46 1.35 -> ``USER_ACTIVITY_SIGMA`` = 1.24 (their mean); the location is then
  set so the mean is RetailRocket's 2,756,101 / 1,407,580 = 1.958 events per visitor.
- Sessions (30 min inactivity; REES46 has its own ``user_session``): a visitor's next event starts
  a new session with probability 0.160 (Taobao full 9-day histories, the only sample long enough to
  hold several sessions per user) -> ``NEW_SESSION_PROBABILITY``.
- Inter-event gaps within sessions: the empirical quantiles of the pooled Taobao-full-history and
  REES46 gaps (median 39 s, 95th percentile 5.4 min, 99th 16 min: heavy-tailed) -> ``SESSION_GAP_QUANTILES_S``.
- Gaps between a visitor's sessions: empirical quantiles from Taobao full histories (censored by
  their 9-day span) -> ``SESSION_RETURN_QUANTILES_S``.
- Daily cycle: events per hour of local day (UTC+8) in Taobao full histories -> ``HOURLY_PROFILE``.
- Repeat views of an item already seen in the same session: Taobao full histories 0.111, REES46
  0.279 -> ``REPEAT_VIEW_PROBABILITY`` = 0.195 (their mean).
- A new item viewed in a session is in the visitor's category: Taobao full histories 0.463,
  REES46 0.545 (same category as the previous event, different item) -> ``SAME_CATEGORY_PROBABILITY``
  = 0.50 (their mean).
- Transactions preceded by an add-to-cart of the same item in the session: REES46 0.332 (the
  one sample where, as in the generated log, every purchase has an earlier view) ->
  ``CARTED_TRANSACTION_SHARE``.
- Items per category: zero-truncated Poisson-lognormal fit of distinct items per category in the
  Taobao window: 1.65 -> ``CATEGORY_SIZE_SIGMA``.
- Prices: log-price of REES46 products, mean 4.71, sd 1.32 -> ``PRICE_LOG_MEAN`` / ``PRICE_LOG_SD``.
- ``AVAILABLE_SHARE`` = 0.95 is an assumption (no calibration source has stock data).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import duckdb
import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln

# --- totals: published RetailRocket figures -------------------------------------------------
RETAILROCKET_EVENTS = 2_756_101
RETAILROCKET_EVENT_MIX = {"view": 2_664_312, "addtocart": 69_332, "transaction": 22_457}
RETAILROCKET_VISITORS = 1_407_580
RETAILROCKET_ITEMS = 235_061
RETAILROCKET_CATEGORIES = 1_669
#: 2015-05-03 00:00 at UTC+3, in epoch milliseconds; the log spans 138 days to 2015-09-18 00:00.
WINDOW_START_MS = 1_430_600_400_000
WINDOW_DAYS = 138
SHOP_UTC_OFFSET_HOURS = 3
LIVE_ITEM_SHARE = 0.5
AVAILABLE_SHARE = 0.95

# --- shapes: measured on the real Taobao and REES46 logs (see measure_shapes) ---------------
ITEM_POPULARITY_SIGMA = 1.73
USER_ACTIVITY_SIGMA = 1.24
CATEGORY_SIZE_SIGMA = 1.65
NEW_SESSION_PROBABILITY = 0.160
REPEAT_VIEW_PROBABILITY = 0.195
SAME_CATEGORY_PROBABILITY = 0.50
CARTED_TRANSACTION_SHARE = 0.332
PRICE_LOG_MEAN = 4.71
PRICE_LOG_SD = 1.32
#: probabilities at which the gap quantiles below are tabulated (finer in the heavy tail)
QUANTILE_PROBABILITIES = tuple(round(0.05 * i, 2) for i in range(20)) + (0.975, 0.99, 0.995, 1.0)
#: seconds between consecutive events of a session (pooled Taobao full histories + REES46)
SESSION_GAP_QUANTILES_S = (0.0, 7.0, 10.0, 13.0, 16.0, 19.0, 22.0, 26.0, 30.0, 34.0, 39.0, 45.0,
                           52.0, 60.0, 71.0, 85.0, 105.0, 136.0, 190.0, 322.0, 519.5, 947.9, 1245.1, 1800.0)  # fmt: skip
#: seconds between the starts of a visitor's consecutive sessions (Taobao full histories)
SESSION_RETURN_QUANTILES_S = (1809.0, 3061.5, 4136.0, 5388.8, 6745.0, 8178.5, 10494.5, 13457.3, 16393.0,
                              20769.8, 26280.0, 32792.5, 39812.0, 46984.5, 54347.5, 61921.0, 73961.0, 84772.8,
                              99362.0, 148888.8, 221851.5, 302389.8, 338618.8, 462596.0)  # fmt: skip
#: events per local hour of day (0..23), Taobao full histories, UTC+8
HOURLY_PROFILE = (347, 88, 104, 48, 43, 44, 231, 271, 306, 246, 423, 312,
                  551, 544, 535, 514, 485, 460, 465, 444, 851, 1137, 980, 571)  # fmt: skip

SESSION_TIMEOUT_S = 1800

#: Real logs as (visitor, item, category, event, ts_ms, session) with the project's event mapping
#: (Taobao 'fav' counts as addtocart, as in recsys_dagster.ingest.formats). ``session`` is NULL
#: where the log has none (then 30 min inactivity splits sessions).
REAL_LOGS: Mapping[str, tuple[str, str]] = {
    "taobao_window": (
        "taobao_userbehavior/UserBehavior_20171126_0100-0310UTC_shared.csv",
        "Taobao window (88k events, 2h10m)",
    ),
    "taobao_histories": (
        "taobao_userbehavior/UserBehavior_tail10k_114users_fullhistory.csv",
        "Taobao full 9-day histories (114 users)",
    ),
    "rees46": ("rees46_multicategory_head/2019-Oct_head_0000-0249UTC.csv", "REES46 window (17k events, 2h50m)"),
}

_TAOBAO_SQL = """
SELECT u AS visitor, i AS item, c AS category,
       CASE b WHEN 'pv' THEN 'view' WHEN 'buy' THEN 'transaction' ELSE 'addtocart' END AS event,
       t * 1000 AS ts_ms, NULL::VARCHAR AS session
FROM read_csv(?, header = false,
              columns = {'u': 'VARCHAR', 'i': 'VARCHAR', 'c': 'VARCHAR', 'b': 'VARCHAR', 't': 'BIGINT'})
"""
_REES46_SQL = """
SELECT user_id::VARCHAR AS visitor, product_id::VARCHAR AS item, category_id::VARCHAR AS category,
       CASE event_type WHEN 'view' THEN 'view' WHEN 'cart' THEN 'addtocart' ELSE 'transaction' END AS event,
       (epoch(event_time::TIMESTAMPTZ) * 1000)::BIGINT AS ts_ms, user_session AS session,
       price
FROM read_csv(?, header = true)
"""


def shared_datasets_dir() -> Path:
    """../shared/datasets beside the checkout (override with RECSYS_SHARED_DATASETS), as the tests do."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    return Path(os.environ.get("RECSYS_SHARED_DATASETS", default))


def register_real_logs(con: duckdb.DuckDBPyConnection, datasets_dir: Path) -> list[str]:
    """Create one table per available real log (names of ``REAL_LOGS``); returns the names created."""
    created = []
    for name, (relative, _label) in REAL_LOGS.items():
        path = datasets_dir / relative
        if not path.is_file():
            continue
        sql = _REES46_SQL if name == "rees46" else _TAOBAO_SQL
        con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}", [str(path)])
        created.append(name)
    return created


def sessionized_sql(table: str) -> str:
    """SQL adding ``session_key`` and ``gap_s`` (seconds since the previous event of the session).

    The log's own session id is used when it has one, else 30 minutes of inactivity end a session.
    ``table`` is a name from ``REAL_LOGS`` or a generator-made view, never user input.
    """
    return f"""
    WITH ordered AS (
        SELECT *, row_number() OVER () AS rn FROM {table}
    ), gaps AS (
        SELECT *, (ts_ms - lag(ts_ms) OVER (PARTITION BY visitor ORDER BY ts_ms, rn)) / 1000.0 AS user_gap_s
        FROM ordered
    ), keyed AS (
        SELECT *, coalesce(session, visitor || '#' || sum(
                      CASE WHEN user_gap_s IS NULL OR user_gap_s > {SESSION_TIMEOUT_S} THEN 1 ELSE 0 END
                  ) OVER (PARTITION BY visitor ORDER BY ts_ms, rn ROWS UNBOUNDED PRECEDING)) AS session_key
        FROM gaps
    )
    SELECT *, (ts_ms - lag(ts_ms) OVER (PARTITION BY session_key ORDER BY ts_ms, rn)) / 1000.0 AS gap_s FROM keyed
    """


def _poisson_lognormal_logpmf(k: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    """log P(k) of a Poisson whose rate is lognormal(mu, sigma), by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    rate = np.exp(mu + sigma * nodes)[None, :]
    terms = k[:, None] * np.log(rate) - rate - gammaln(k[:, None] + 1) + np.log(weights / weights.sum())[None, :]
    top = terms.max(axis=1, keepdims=True)
    return top[:, 0] + np.log(np.exp(terms - top).sum(axis=1))


def fit_poisson_lognormal(counts: np.ndarray, zero_truncated: bool) -> tuple[float, float]:
    """Maximum-likelihood (mu, sigma) of counts; zero-truncated when zeros cannot be observed.

    The log-sd sigma is the shape that does not depend on how long the log runs (a longer window
    only moves mu), which is why it transfers from 2-hour samples to a 4.5-month log.
    """
    values, multiplicity = np.unique(counts, return_counts=True)
    values = values.astype(float)

    def negative_log_likelihood(params: np.ndarray) -> float:
        mu, sigma = params[0], float(np.exp(params[1]))
        log_pmf = _poisson_lognormal_logpmf(values, mu, sigma)
        if zero_truncated:
            log_pmf = log_pmf - np.log1p(-np.exp(_poisson_lognormal_logpmf(np.zeros(1), mu, sigma)[0]))
        return float(-(multiplicity * log_pmf).sum())

    result = minimize(negative_log_likelihood, np.zeros(2), method="Nelder-Mead")
    return float(result.x[0]), float(np.exp(result.x[1]))


def _counts(con: duckdb.DuckDBPyConnection, sql: str) -> np.ndarray:
    return con.execute(sql).fetchnumpy()["n"]


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> float:
    return float(con.execute(sql).fetchone()[0])


def measure_shapes(con: duckdb.DuckDBPyConnection) -> dict[str, object]:
    """Every shape constant of this module, measured on the real logs registered in ``con``."""
    per_log: dict[str, object] = {}
    for name in ("taobao_window", "taobao_histories", "rees46"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE s_{name} AS {sessionized_sql(name)}")
        per_log[f"item_sigma[{name}]"] = fit_poisson_lognormal(
            _counts(con, f"SELECT count(*) AS n FROM {name} GROUP BY item"), zero_truncated=True
        )[1]
        per_log[f"repeat_view[{name}]"] = _scalar(con, f"""
            WITH x AS (SELECT event, count(*) OVER (PARTITION BY session_key, item ORDER BY ts_ms, rn
                       ROWS UNBOUNDED PRECEDING) - 1 AS prior FROM s_{name})
            SELECT avg((prior > 0)::INT) FROM x WHERE event = 'view'""")
        per_log[f"same_category[{name}]"] = _scalar(con, f"""
            WITH x AS (SELECT category, item, lag(category) OVER w AS prev_category, lag(item) OVER w AS prev_item
                       FROM s_{name} WINDOW w AS (PARTITION BY session_key ORDER BY ts_ms, rn))
            SELECT avg((category = prev_category AND item <> prev_item)::INT) FROM x WHERE prev_item IS NOT NULL""")
    for name in ("taobao_window", "rees46"):
        per_log[f"user_sigma[{name}]"] = fit_poisson_lognormal(
            _counts(con, f"SELECT count(*) - 1 AS n FROM {name} GROUP BY visitor"), zero_truncated=False
        )[1]
    per_log["category_size_sigma[taobao_window]"] = fit_poisson_lognormal(
        _counts(con, "SELECT count(DISTINCT item) AS n FROM taobao_window GROUP BY category"), zero_truncated=True
    )[1]
    per_log["new_session_probability[taobao_histories]"] = _scalar(con, """
        SELECT (count(DISTINCT session_key) - count(DISTINCT visitor)) / (count(*) - count(DISTINCT visitor))
        FROM s_taobao_histories""")
    per_log["carted_transaction_share[rees46]"] = _scalar(con, """
        WITH t AS (SELECT * FROM s_rees46 WHERE event = 'transaction')
        SELECT avg((EXISTS (SELECT 1 FROM s_rees46 c WHERE c.session_key = t.session_key AND c.item = t.item
                    AND c.event = 'addtocart' AND c.rn < t.rn AND c.ts_ms <= t.ts_ms))::INT) FROM t""")
    per_log["session_gap_quantiles_s[taobao_histories+rees46]"] = con.execute(f"""
        SELECT quantile_cont(gap_s, ?) FROM (
            SELECT gap_s FROM s_taobao_histories UNION ALL SELECT gap_s FROM s_rees46)
        WHERE gap_s <= {SESSION_TIMEOUT_S}""", [list(QUANTILE_PROBABILITIES)]).fetchone()[0]
    per_log["session_return_quantiles_s[taobao_histories]"] = con.execute(f"""
        WITH starts AS (SELECT visitor, session_key, min(ts_ms) AS start_ms FROM s_taobao_histories GROUP BY ALL)
        SELECT quantile_cont(return_s, ?) FROM (
            SELECT (start_ms - lag(start_ms) OVER (PARTITION BY visitor ORDER BY start_ms)) / 1000.0 AS return_s
            FROM starts) WHERE return_s IS NOT NULL""", [list(QUANTILE_PROBABILITIES)]).fetchone()[0]
    per_log["hourly_profile_utc+8[taobao_histories]"] = [
        int(n) for n in _counts(con, """
            SELECT hour(make_timestamp((ts_ms + 8 * 3600 * 1000) * 1000)) AS local_hour, count(*) AS n
            FROM taobao_histories GROUP BY local_hour ORDER BY local_hour""")
    ]
    per_log["price_log_mean_sd[rees46]"] = con.execute("""
        SELECT avg(ln(p)), stddev(ln(p)) FROM (SELECT item, any_value(price) AS p FROM rees46
        WHERE price > 0 GROUP BY item)""").fetchone()
    return per_log


#: (key, label) of the statistics compared between the generated and the real logs.
STATISTICS: tuple[tuple[str, str], ...] = (
    ("events", "events"),
    ("views", "views"),
    ("addtocarts", "add-to-carts"),
    ("transactions", "transactions"),
    ("visitors", "visitors"),
    ("items", "items with events"),
    ("events_per_visitor", "events per visitor"),
    ("visitors_1", "share of visitors with 1 event"),
    ("visitors_2", "share of visitors with 2 events"),
    ("visitors_3plus", "share of visitors with >=3 events"),
    ("top1pct_items_share", "top-1% items' share of events"),
    ("carts_per_view", "add-to-carts / views"),
    ("transactions_per_cart", "transactions / add-to-carts"),
    ("transactions_after_cart", "transactions with an earlier add-to-cart (same visitor, item)"),
    ("transactions_after_seen", "transactions with an earlier view or add-to-cart"),
    ("events_per_session", "events per session"),
    ("median_session_gap_s", "median inter-event gap in sessions (s)"),
    ("p90_session_gap_s", "90th percentile inter-event gap in sessions (s)"),
)


def log_statistics(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, float]:
    """``STATISTICS`` of a log table (visitor, item, event, ts_ms, session), one SQL for every log.

    "Earlier" allows the same second, because the real logs only have second resolution.
    ``table`` is a name from ``REAL_LOGS`` or a generator-made view, never user input.
    """
    row = con.execute(f"""
        WITH s AS ({sessionized_sql(table)}),
        per_visitor AS (SELECT visitor, count(*) AS n FROM {table} GROUP BY visitor),
        per_item AS (SELECT count(*) AS n, row_number() OVER (ORDER BY count(*) DESC) AS rk, count(*) OVER () AS n_items
                     FROM {table} GROUP BY item),
        firsts AS (
            SELECT visitor, item, min(ts_ms) FILTER (WHERE event = 'addtocart') AS first_cart,
                   min(ts_ms) FILTER (WHERE event IN ('view', 'addtocart')) AS first_seen
            FROM {table} WHERE event <> 'transaction' GROUP BY ALL),
        tx AS (
            SELECT t.ts_ms, f.first_cart, f.first_seen FROM {table} t
            LEFT JOIN firsts f USING (visitor, item) WHERE t.event = 'transaction'),
        mix AS (
            SELECT count(*) AS events, count(*) FILTER (WHERE event = 'view') AS views,
                   count(*) FILTER (WHERE event = 'addtocart') AS addtocarts,
                   count(*) FILTER (WHERE event = 'transaction') AS transactions,
                   count(DISTINCT visitor) AS visitors, count(DISTINCT item) AS items FROM {table})
        SELECT mix.*, events / visitors,
            (SELECT avg((n = 1)::INT) FROM per_visitor), (SELECT avg((n = 2)::INT) FROM per_visitor),
            (SELECT avg((n >= 3)::INT) FROM per_visitor),
            (SELECT sum(n) FILTER (WHERE rk <= ceil(n_items * 0.01)) / sum(n) FROM per_item),
            addtocarts / nullif(views, 0), transactions / nullif(addtocarts, 0),
            (SELECT avg(coalesce(first_cart <= ts_ms, false)::INT) FROM tx),
            (SELECT avg(coalesce(first_seen <= ts_ms, false)::INT) FROM tx),
            (SELECT count(*) / count(DISTINCT session_key) FROM s),
            (SELECT median(gap_s) FROM s WHERE gap_s <= {SESSION_TIMEOUT_S}),
            (SELECT quantile_cont(gap_s, 0.9) FROM s WHERE gap_s <= {SESSION_TIMEOUT_S})
        FROM mix""").fetchone()
    return {
        key: float(value) if value is not None else float("nan") for (key, _), value in zip(STATISTICS, row, strict=True)
    }


def main() -> None:
    """Print every shape constant re-measured from the real logs."""
    con = duckdb.connect()
    datasets = shared_datasets_dir()
    missing = set(REAL_LOGS) - set(register_real_logs(con, datasets))
    if missing:
        raise SystemExit(f"real logs missing under {datasets}: {sorted(missing)} (set RECSYS_SHARED_DATASETS)")
    for key, value in measure_shapes(con).items():
        print(f"{key}: {np.round(value, 3).tolist() if not isinstance(value, float) else round(value, 3)}")


if __name__ == "__main__":
    main()
