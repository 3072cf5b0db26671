"""Seeded generator of a RetailRocket-shaped shop log: ``events.csv`` plus an item catalog ``items.csv``.

Usage: ``python -m bench.generate --events N --out DIR [--seed S] [--items M] [--users U] [--stats]
[--stats-md PATH]``. The same arguments always give byte-identical files.

Output
- ``DIR/events.csv``: ``timestamp,visitorid,event,itemid,transactionid`` (RetailRocket's header;
  epoch milliseconds; event view/addtocart/transaction; transactionid only on transactions, shared
  by the items bought in one session; unique, not dense),
  sorted by time.
- ``DIR/items.csv``: ``item_id,name,category,price,available`` (the project's canonical catalog).

Scale (published RetailRocket figures at N = 2,756,101, see ``bench.calibration``)
- visitors grow linearly with N (``round(N * 1,407,580 / 2,756,101)``): the events per visitor are a
  property of the traffic, not of the log's length;
- the catalog grows with the square root of N (``round(235,061 * sqrt(N / 2,756,101))``): a larger
  shop sells more products, but not proportionally more; half of it receives traffic;
- the event mix is exact: ``round(N * 69,332 / 2,756,101)`` add-to-carts, ``round(N * 22,457 /
  2,756,101)`` transactions, the rest views. At the default N all published totals are reproduced.

Model (every shape constant and its real-log source is in ``bench.calibration``)
1. Catalog: items in categories of lognormal size; a lognormal popularity weight for live items.
2. Visitors: 1 + Poisson(lognormal rate) events each, rescaled to exactly N events in total; a home
   item drawn by popularity fixes the visitor's first view and home category.
3. Sessions: each next event of a visitor starts a new session with a fixed probability; sessions
   return after gaps drawn from real return-gap quantiles; the first starts on a uniform day at an
   hour of the real daily cycle; events within a session follow real inter-event gap quantiles.
4. Funnel: add-to-carts sit on non-first slots of sessions and cart the item of the previous event;
   a share of the transactions buys, in order, the items carted earlier in the session, the others
   buy an item viewed earlier in the session. So every transaction's (visitor, item) has an earlier
   view or add-to-cart, and every add-to-cart an earlier view.
5. Views: a new view stays in the visitor's home category with a fixed probability, else it is drawn
   from the whole catalog; some views repeat an item seen earlier in the session.

Next day (``--next-day EVENTS``): after the base log, one more day of about EVENTS events as its own
file ``DIR/day-YYYY-MM-DD.csv`` (the incremental benchmark's inbox file, ``bench.incremental``). The
same model on the same catalog, each visitor's events moved by whole days so that their first lands
on the day after the base log's last event (events that would fall on a later day are dropped);
returning visitors make up the share of a day's visitors that the base log's last full day has
(visitors seen on an earlier day), drawn from the base visitors in proportion to their events;
the others are new ids. Seeded from ``--seed`` too, so the same arguments give the same file.

Memory stays bounded: visitors are generated in fixed blocks (vectorized numpy, no per-event Python)
written as Parquet parts; DuckDB sorts them (spilling to disk) into the CSV.
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench import calibration as cal

EVENT_NAMES = ("view", "addtocart", "transaction")
VIEW, CART, BUY = 0, 1, 2
#: Visitors per generated block: fixed, so the output never depends on the machine.
VISITORS_PER_BLOCK = 250_000
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
#: Separate random streams per purpose (combined with the seed), so one part's draws never shift another's.
CATALOG_STREAM, VISITOR_STREAM, BLOCK_STREAM, NEXT_DAY_STREAM = 1, 2, 3, 4
DUCKDB_MEMORY_LIMIT = "2GB"
#: Real logs that are short windows: compared also with the generated log's earliest slice of their size.
SLICED_REAL_LOGS = ("taobao_window", "rees46")


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate: total events, seed, catalog size and number of visitors."""

    events: int
    seed: int
    items: int
    users: int

    @classmethod
    def scaled(cls, events: int, seed: int = 0, items: int | None = None, users: int | None = None) -> GeneratorConfig:
        """Defaults scaled from the published RetailRocket totals (see the module docstring)."""
        ratio = events / cal.RETAILROCKET_EVENTS
        config = cls(
            events=events,
            seed=seed,
            items=items if items is not None else max(1, round(cal.RETAILROCKET_ITEMS * math.sqrt(ratio))),
            users=users if users is not None else max(1, round(cal.RETAILROCKET_VISITORS * ratio)),
        )
        if not 1 <= config.users <= config.events:
            raise ValueError(f"need 1 <= users <= events, got users={config.users}, events={config.events}")
        if config.items < 1:
            raise ValueError(f"need at least one item, got {config.items}")
        return config

    def event_type_totals(self) -> dict[int, int]:
        """Exact count per event type: RetailRocket's mix scaled to ``events``."""
        carts = round(self.events * cal.RETAILROCKET_EVENT_MIX["addtocart"] / cal.RETAILROCKET_EVENTS)
        buys = round(self.events * cal.RETAILROCKET_EVENT_MIX["transaction"] / cal.RETAILROCKET_EVENTS)
        return {VIEW: self.events - carts - buys, CART: carts, BUY: buys}


@dataclass(frozen=True)
class Catalog:
    """Items in sampling order (grouped by category) with cumulative popularity for inverse-CDF draws."""

    item_ids: np.ndarray
    categories: np.ndarray
    prices: np.ndarray
    available: np.ndarray
    cumulative_weight: np.ndarray
    #: cumulative weight before each category's first item; entry c+1 closes category c
    category_bounds: np.ndarray

    def draw(self, uniforms: np.ndarray, within_category: np.ndarray | None = None) -> np.ndarray:
        """Catalog positions drawn by popularity, globally or (where given) within a category."""
        if within_category is None:
            targets = uniforms * self.cumulative_weight[-1]
        else:
            low = self.category_bounds[within_category]
            targets = low + uniforms * (self.category_bounds[within_category + 1] - low)
        positions = np.searchsorted(self.cumulative_weight, targets, side="right")
        return np.minimum(positions, len(self.item_ids) - 1)


def build_catalog(config: GeneratorConfig) -> Catalog:
    """Items with ids, categories, prices, availability and lognormal popularity (zero for dead items)."""
    rng = np.random.default_rng([config.seed, CATALOG_STREAM])
    n_items = config.items
    n_categories = max(1, round(n_items * cal.RETAILROCKET_CATEGORIES / cal.RETAILROCKET_ITEMS))
    category_size = rng.lognormal(0.0, cal.CATEGORY_SIZE_SIGMA, n_categories)
    categories = rng.choice(n_categories, n_items, p=category_size / category_size.sum())
    item_ids = rng.choice(2 * n_items, n_items, replace=False)
    live = rng.permutation(n_items) < max(1, round(n_items * cal.LIVE_ITEM_SHARE))
    weights = np.where(live, rng.lognormal(0.0, cal.ITEM_POPULARITY_SIGMA, n_items), 0.0)
    prices = np.round(rng.lognormal(cal.PRICE_LOG_MEAN, cal.PRICE_LOG_SD, n_items), 2)
    available = rng.random(n_items) < cal.AVAILABLE_SHARE
    order = np.argsort(categories, kind="stable")
    cumulative = np.cumsum(weights[order])
    first_of_category = np.searchsorted(categories[order], np.arange(n_categories + 1))
    bounds = np.concatenate([[0.0], cumulative])[first_of_category]
    return Catalog(item_ids[order], categories[order], prices[order], available[order], cumulative, bounds)


def draw_visitor_activity(config: GeneratorConfig, rng: np.random.Generator) -> np.ndarray:
    """Events per visitor: 1 + Poisson(lognormal rate), adjusted to sum exactly to ``config.events``.

    The lognormal's log-sd is the real logs' (calibration.USER_ACTIVITY_SIGMA); its location gives
    the requested mean events per visitor. The adjustment adds events in proportion to the rates or
    removes extra events uniformly, so the shape is kept.
    """
    mean_extra = config.events / config.users - 1.0
    if mean_extra <= 0:
        return np.ones(config.users, dtype=np.int64)
    sigma = cal.USER_ACTIVITY_SIGMA
    rates = np.exp(math.log(mean_extra) - sigma**2 / 2 + sigma * rng.standard_normal(config.users))
    counts = 1 + rng.poisson(rates)
    missing = config.events - int(counts.sum())
    if missing > 0:
        counts += rng.multinomial(missing, rates / rates.sum())
    elif missing < 0:
        counts -= rng.multivariate_hypergeometric(counts - 1, -missing, method="marginals")
    return counts


def split_exactly(total: int, shares: np.ndarray) -> np.ndarray:
    """``total`` split in proportion to ``shares`` into integers summing exactly to it (largest remainder)."""
    exact = total * shares / shares.sum()
    parts = np.floor(exact).astype(np.int64)
    remainder_order = np.argsort(-(exact - parts), kind="stable")
    parts[remainder_order[: total - int(parts.sum())]] += 1
    return parts


def quantile_draws(rng: np.random.Generator, size: int, quantiles: Sequence[float]) -> np.ndarray:
    """Draws from the distribution tabulated by ``quantiles`` at calibration.QUANTILE_PROBABILITIES."""
    return np.interp(rng.random(size), cal.QUANTILE_PROBABILITIES, quantiles)


@dataclass(frozen=True)
class Block:
    """One block of visitors to generate: their event counts, ids and home items."""

    index: int
    counts: np.ndarray
    visitor_ids: np.ndarray
    home_items: np.ndarray
    carts: int
    buys: int
    first_slot: int


def assign_event_types(
    rng: np.random.Generator, new_session: np.ndarray, session_start: np.ndarray, carts: int, buys: int
) -> tuple[np.ndarray, np.ndarray]:
    """Event type per slot and the mask of transactions that buy an item carted earlier in the session.

    Add-to-carts go to slots that are not first in their session; the calibrated share of the
    transactions goes to view slots after an add-to-cart of the same session, the rest to any
    later view slot. Counts are exact unless the block has too few multi-event sessions.
    """
    n = new_session.size
    slots = np.arange(n)
    event = np.zeros(n, dtype=np.int8)
    later = np.flatnonzero(~new_session)
    event[rng.choice(later, min(carts, later.size), replace=False)] = CART
    last_cart = np.maximum.accumulate(np.where(event == CART, slots, -1))
    after_cart = np.flatnonzero((last_cart >= session_start) & (event == VIEW))
    n_carted = min(round(buys * cal.CARTED_TRANSACTION_SHARE), after_cart.size)
    carted_buy = np.zeros(n, dtype=bool)
    carted_buy[rng.choice(after_cart, n_carted, replace=False)] = True
    event[carted_buy] = BUY
    free_views = np.flatnonzero(~new_session & (event == VIEW))
    event[rng.choice(free_views, min(buys - n_carted, free_views.size), replace=False)] = BUY
    return event, carted_buy


def item_sources(
    rng: np.random.Generator,
    event: np.ndarray,
    carted_buy: np.ndarray,
    new_session: np.ndarray,
    session_start: np.ndarray,
) -> np.ndarray:
    """For each slot, the earlier slot of the same session whose item it repeats (itself if it draws anew).

    Add-to-carts cart the previous event's item; carted transactions buy the session's carts in
    order; other transactions and repeat views take a random earlier slot of the session.
    """
    slots = np.arange(event.size)
    source = slots.copy()
    is_cart = event == CART
    source[is_cart] = slots[is_cart] - 1
    cart_slots = np.flatnonzero(is_cart)
    bought = np.flatnonzero(carted_buy)
    carts_before_session = np.searchsorted(cart_slots, session_start[bought])
    carts_in_session_before = np.searchsorted(cart_slots, bought) - carts_before_session
    earlier_carted_buys = np.cumsum(carted_buy) - carted_buy
    rank_in_session = earlier_carted_buys[bought] - earlier_carted_buys[session_start[bought]]
    source[bought] = cart_slots[carts_before_session + rank_in_session % carts_in_session_before]
    repeat_view = (event == VIEW) & ~new_session & (rng.random(event.size) < cal.REPEAT_VIEW_PROBABILITY)
    from_earlier = np.flatnonzero(repeat_view | ((event == BUY) & ~carted_buy))
    position = from_earlier - session_start[from_earlier]
    source[from_earlier] = session_start[from_earlier] + (rng.random(from_earlier.size) * position).astype(np.int64)
    return resolve_sources(source)


def resolve_sources(source: np.ndarray) -> np.ndarray:
    """Follow source links to the slot that drew the item (pointer jumping: log(chain) numpy passes)."""
    while True:
        jumped = source[source]
        if np.array_equal(jumped, source):
            return source
        source = jumped


def session_start_times(
    rng: np.random.Generator,
    session_first_slot: np.ndarray,
    first_of_visitor: np.ndarray,
    visitor_of_session: np.ndarray,
    n_visitors: int,
) -> np.ndarray:
    """Epoch ms at which each session starts.

    A visitor's first session starts on a uniform day (leaving room for the later ones) at an hour
    of the daily cycle; later sessions follow at real return gaps.
    """
    return_gaps_s = quantile_draws(rng, session_first_slot.size, cal.SESSION_RETURN_QUANTILES_S)
    returns_ms = np.where(first_of_visitor, 0.0, return_gaps_s * 1000)
    since_first = np.cumsum(returns_ms)
    since_first -= since_first[np.flatnonzero(first_of_visitor)][visitor_of_session]
    span_days = np.zeros(n_visitors)
    np.maximum.at(span_days, visitor_of_session, np.ceil(since_first / DAY_MS))
    free_days = np.maximum(1, cal.WINDOW_DAYS - 1 - span_days)
    day = np.floor(rng.random(n_visitors) * free_days)
    hour_weights = np.asarray(cal.HOURLY_PROFILE, dtype=float)
    hour = rng.choice(24, n_visitors, p=hour_weights / hour_weights.sum())
    first_ms = cal.WINDOW_START_MS + day * DAY_MS + (hour + rng.random(n_visitors)) * HOUR_MS
    return np.floor(first_ms[visitor_of_session] + since_first).astype(np.int64)


def generate_block(block: Block, catalog: Catalog, seed: int) -> pa.Table:
    """Events of one block of visitors as an Arrow table (seq, timestamp, visitorid, event, itemid, tx_key).

    ``tx_key`` is the transaction id, one basket per buying session: the block's first slot plus the
    session's number in the block, unique since a block has no more sessions than events.
    """
    rng = np.random.default_rng([seed, BLOCK_STREAM, block.index])
    counts = block.counts
    n = int(counts.sum())
    slots = np.arange(n)
    visitor_of_slot = np.repeat(np.arange(counts.size), counts)
    first_of_visitor = np.zeros(n, dtype=bool)
    first_of_visitor[np.cumsum(counts) - counts] = True
    new_session = first_of_visitor | (rng.random(n) < cal.NEW_SESSION_PROBABILITY)
    session_first_slot = np.flatnonzero(new_session)
    session_of_slot = np.cumsum(new_session) - 1
    session_start = session_first_slot[session_of_slot]

    event, carted_buy = assign_event_types(rng, new_session, session_start, block.carts, block.buys)
    source = item_sources(rng, event, carted_buy, new_session, session_start)

    drawn = np.flatnonzero(source == slots)
    home_category = catalog.categories[block.home_items]
    in_home = rng.random(drawn.size) < cal.SAME_CATEGORY_PROBABILITY
    uniforms = rng.random(drawn.size)
    drawn_position = np.where(
        in_home,
        catalog.draw(uniforms, home_category[visitor_of_slot[drawn]]),
        catalog.draw(uniforms),
    )
    drawn_position[first_of_visitor[drawn]] = block.home_items
    item_position = np.empty(n, dtype=np.int64)
    item_position[drawn] = drawn_position
    item_position = item_position[source]

    starts = session_start_times(
        rng, session_first_slot, first_of_visitor[session_first_slot], visitor_of_slot[session_first_slot], counts.size
    )
    # at least 1 ms, so a session's events are strictly ordered in time
    gap_ms = np.maximum(1, np.round(quantile_draws(rng, n, cal.SESSION_GAP_QUANTILES_S) * 1000)).astype(np.int64)
    elapsed = np.cumsum(np.where(new_session, 0, gap_ms))
    timestamp = starts[session_of_slot] + elapsed - elapsed[session_start]

    tx_key = np.where(event == BUY, block.first_slot + session_of_slot, -1)
    return pa.table(
        {
            "seq": block.first_slot + slots,
            "timestamp": timestamp,
            "visitorid": block.visitor_ids[visitor_of_slot],
            "event": event,
            "itemid": catalog.item_ids[item_position],
            "tx_key": pa.array(tx_key, mask=event != BUY),
        }
    )


def plan_blocks(config: GeneratorConfig, catalog: Catalog) -> list[Block]:
    """Visitors (activity, shuffled ids, home items) cut into fixed blocks with exact per-block type totals."""
    rng = np.random.default_rng([config.seed, VISITOR_STREAM])
    counts = draw_visitor_activity(config, rng)
    visitor_ids = rng.permutation(config.users)
    home_items = catalog.draw(rng.random(config.users))
    edges = list(range(0, config.users, VISITORS_PER_BLOCK)) + [config.users]
    block_events = np.add.reduceat(counts, edges[:-1]).astype(float)
    totals = config.event_type_totals()
    carts = split_exactly(totals[CART], block_events)
    buys = split_exactly(totals[BUY], block_events)
    first_slots = np.concatenate([[0], np.cumsum(block_events)]).astype(np.int64)
    return [
        Block(i, counts[a:b], visitor_ids[a:b], home_items[a:b], int(carts[i]), int(buys[i]), int(first_slots[i]))
        for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]


_EVENTS_COPY_SQL = """
COPY (
    SELECT timestamp, visitorid, ['view', 'addtocart', 'transaction'][event + 1] AS event, itemid,
           tx_key AS transactionid
    FROM read_parquet(?) ORDER BY timestamp, seq
) TO ? (HEADER, DELIMITER ',')
"""
_ITEMS_COPY_SQL = """
COPY (
    SELECT item_id, 'item ' || item_id AS name, category, price, available
    FROM catalog_table ORDER BY item_id
) TO ? (HEADER, DELIMITER ',')
"""


def quiet_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection without the progress bar (it would garble the printed table)."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    return con


def _duckdb_connection(spill_dir: Path) -> duckdb.DuckDBPyConnection:
    """Connection for the final sort: bounded memory, spilling into the scratch folder."""
    con = quiet_connection()
    con.execute("SET memory_limit = ?", [DUCKDB_MEMORY_LIMIT])
    con.execute("SET temp_directory = ?", [str(spill_dir)])
    return con


def generate(config: GeneratorConfig, out_dir: Path) -> tuple[Path, Path]:
    """Write ``events.csv`` and ``items.csv`` into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events_path, items_path = out_dir / "events.csv", out_dir / "items.csv"
    catalog = build_catalog(config)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".generate-") as scratch:
        scratch_dir = Path(scratch)
        parts = []
        for block in plan_blocks(config, catalog):
            part = scratch_dir / f"block-{block.index:05d}.parquet"
            pq.write_table(generate_block(block, catalog, config.seed), part)
            parts.append(str(part))
        con = _duckdb_connection(scratch_dir)
        try:
            con.execute(_EVENTS_COPY_SQL, [parts, str(events_path)])
            catalog_table = pa.table(
                {
                    "item_id": catalog.item_ids,
                    "category": catalog.categories,
                    "price": catalog.prices,
                    "available": catalog.available,
                }
            )
            con.register("catalog_table", catalog_table)
            con.execute(_ITEMS_COPY_SQL, [str(items_path)])
        finally:
            con.close()
    return events_path, items_path


@dataclass(frozen=True)
class BaseLog:
    """What the next day continues: when the base log ends, who visited it, its last transaction id."""

    day_start_ms: int
    visitor_ids: np.ndarray
    visitor_events: np.ndarray
    returning_share: float
    max_transaction_id: int


BASE_LOG_SQL = """
WITH events AS (SELECT visitorid, timestamp // $day AS day, transactionid FROM read_csv($path)),
last_day AS (SELECT max(day) - 1 AS day FROM events),  -- the last complete day
visitors AS (SELECT visitorid, count(*) AS n_events, min(day) AS first_day,
                    bool_or(day = (SELECT day FROM last_day)) AS on_last_day
             FROM events GROUP BY visitorid)
SELECT (SELECT max(day) FROM events) + 1, (SELECT coalesce(max(transactionid), 0) FROM events),
       avg(CASE WHEN on_last_day THEN CAST(first_day < (SELECT day FROM last_day) AS DOUBLE) END),
       list(visitorid ORDER BY visitorid), list(n_events ORDER BY visitorid)
FROM visitors
"""


def read_base_log(events_path: Path) -> BaseLog:
    """The base log's end, visitors (with event counts) and the share of returning visitors on a day."""
    with quiet_connection() as con:
        next_day, max_tx, returning, visitors, counts = con.execute(
            BASE_LOG_SQL, {"day": DAY_MS, "path": str(events_path)}
        ).fetchone()
    return BaseLog(next_day * DAY_MS, np.asarray(visitors), np.asarray(counts, float), float(returning), int(max_tx))


def day_events(config: GeneratorConfig, catalog: Catalog, seed: int, base: BaseLog) -> pa.Table:
    """Events of ``config.events`` generated the usual way, each visitor's moved by whole days onto
    the base log's next day (later days dropped), visitors mapped to returning or new ids."""
    table = pa.concat_tables([generate_block(block, catalog, seed) for block in plan_blocks(config, catalog)])
    visitor = table["visitorid"].to_numpy()
    timestamp = table["timestamp"].to_numpy()
    first = np.full(config.users, np.iinfo(np.int64).max)
    np.minimum.at(first, visitor, timestamp)
    moved = base.day_start_ms + timestamp - (first[visitor] // DAY_MS) * DAY_MS
    kept = moved < base.day_start_ms + DAY_MS
    rng = np.random.default_rng([seed, NEXT_DAY_STREAM])
    n_returning = round(base.returning_share * config.users)
    returning = rng.choice(
        base.visitor_ids, size=n_returning, replace=False, p=base.visitor_events / base.visitor_events.sum()
    )
    new_ids = base.visitor_ids.max() + 1 + np.arange(config.users - n_returning)
    ids = np.concatenate([returning, new_ids])  # day visitor ids are a permutation: the first ones return
    return pa.table(
        {
            "seq": table["seq"].filter(kept),
            "timestamp": moved[kept],
            "visitorid": ids[visitor[kept]],
            "event": table["event"].filter(kept),
            "itemid": table["itemid"].filter(kept),
            "tx_key": pc.add(table["tx_key"].filter(kept), base.max_transaction_id + 1),  # after the base's ids
        }
    )


def generate_next_day(config: GeneratorConfig, base_events: Path, events: int, out_dir: Path) -> Path:
    """Write about ``events`` events of the day after ``base_events`` (generated with ``config``) as
    ``out_dir/day-YYYY-MM-DD.csv``.

    A first pass learns which share of generated events stays on the day; the second generates
    ``events`` / that share (both passes seeded, so the file is deterministic)."""
    base = read_base_log(base_events)
    catalog = build_catalog(config)
    seed = int(np.random.SeedSequence([config.seed, NEXT_DAY_STREAM]).generate_state(1)[0])

    def day_config(n_events: int) -> GeneratorConfig:
        return GeneratorConfig(n_events, seed, config.items, max(1, round(n_events * config.users / config.events)))

    kept_share = day_events(day_config(events), catalog, seed, base).num_rows / events
    table = day_events(day_config(math.ceil(events / kept_share)), catalog, seed, base)
    day = time.strftime("%Y-%m-%d", time.gmtime(base.day_start_ms / 1000))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"day-{day}.csv"
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".next-day-") as scratch:
        part = Path(scratch) / "day.parquet"
        pq.write_table(table, part)
        with quiet_connection() as con:
            con.execute(_EVENTS_COPY_SQL, [str(part), str(target)])
    return target


def register_generated_log(con: duckdb.DuckDBPyConnection, events_path: Path, name: str = "generated") -> None:
    """A view ``name`` of a generated events.csv in the statistics' columns (visitor, item, event, ts_ms, session)."""
    con.execute(
        f"""CREATE OR REPLACE TABLE {name} AS SELECT visitorid::VARCHAR AS visitor, itemid::VARCHAR AS item,
        NULL::VARCHAR AS category, event, timestamp AS ts_ms, NULL::VARCHAR AS session
        FROM read_csv(?, header = true, columns = {{'timestamp': 'BIGINT', 'visitorid': 'BIGINT', 'event': 'VARCHAR',
        'itemid': 'BIGINT', 'transactionid': 'BIGINT'}})""",
        [str(events_path)],
    )


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value == round(value) and abs(value) >= 10:
        return f"{int(value):,}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"


def statistics_table(events_path: Path, config: GeneratorConfig) -> str:
    """Markdown table: the generated log's statistics beside the published RetailRocket totals and
    the real Taobao / REES46 logs, plus the generated log's earliest slice of each real log's size.

    The slices make the short, sparse real windows comparable: popularity and activity shares
    depend on how many events a log holds. Real logs missing on this machine are left out.
    """
    con = quiet_connection()
    register_generated_log(con, events_path)
    columns = {"generated": cal.log_statistics(con, "generated")}
    published = _published_retailrocket(config)
    real = cal.register_real_logs(con, cal.shared_datasets_dir())
    for name in real:
        size = int(con.execute(f"SELECT count(*) FROM {name}").fetchone()[0])
        con.execute(f"CREATE OR REPLACE VIEW slice_{name} AS SELECT * FROM generated ORDER BY ts_ms LIMIT {size}")
        columns[cal.REAL_LOGS[name][1]] = cal.log_statistics(con, name)
        if name in SLICED_REAL_LOGS:
            columns[f"generated, first {size:,} events"] = cal.log_statistics(con, f"slice_{name}")
    con.close()
    header = ["statistic", "generated", f"RetailRocket published (scaled to {config.events:,})", *list(columns)[1:]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, label in cal.STATISTICS:
        cells = [_format_value(columns["generated"][key]), _format_value(published.get(key, float("nan")))]
        cells += [_format_value(values[key]) for name, values in columns.items() if name != "generated"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _published_retailrocket(config: GeneratorConfig) -> dict[str, float]:
    """The published RetailRocket figures, scaled to the generated size as the generator scales them."""
    totals = config.event_type_totals()
    views, carts, buys = totals[VIEW], totals[CART], totals[BUY]
    return {
        "events": config.events,
        "views": views,
        "addtocarts": carts,
        "transactions": buys,
        "visitors": config.users,
        "events_per_visitor": config.events / config.users,
        "carts_per_view": carts / views,
        "transactions_per_cart": buys / carts if carts else float("nan"),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, required=True, help="total events to generate")
    parser.add_argument("--out", type=Path, required=True, help="output directory (events.csv, items.csv)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--items", type=int, default=None, help="catalog size (default: scaled from RetailRocket)")
    parser.add_argument("--users", type=int, default=None, help="visitors (default: scaled from RetailRocket)")
    parser.add_argument(
        "--next-day", type=int, default=None, metavar="EVENTS",
        help="also write about EVENTS events of the day after the log as DIR/day-YYYY-MM-DD.csv",
    )
    parser.add_argument("--stats", action="store_true", help="print the generated vs real statistics table")
    parser.add_argument("--stats-md", type=Path, default=None, help="also write the table (and timing) to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    config = GeneratorConfig.scaled(args.events, args.seed, args.items, args.users)
    started = time.perf_counter()
    events_path, items_path = generate(config, args.out)
    wall = time.perf_counter() - started
    print(f"wrote {events_path} and {items_path} ({config}) in {wall:.1f} s")
    if args.next_day:
        print(f"wrote {generate_next_day(config, events_path, args.next_day, args.out)}")
    if not (args.stats or args.stats_md):
        return
    table = statistics_table(events_path, config)
    print(table)
    if args.stats_md:
        args.stats_md.parent.mkdir(parents=True, exist_ok=True)
        args.stats_md.write_text(_stats_markdown(config, table, wall))


def _stats_markdown(config: GeneratorConfig, table: str, wall_seconds: float) -> str:
    return (
        "# Generated RetailRocket-shaped log vs the real logs\n\n"
        f"Command: `python -m bench.generate --events {config.events} --seed {config.seed} --out DIR "
        "--stats-md bench/results/generator-stats.md`  \n"
        f"Visitors {config.users:,}, catalog {config.items:,} items. "
        f"Generation wall time (events.csv + items.csv, 2 cores): {wall_seconds:.1f} s.\n\n"
        f"{table}\n\n"
        "Real logs: the RetailRocket column holds the published totals (no genuine RetailRocket events are\n"
        "available offline); the Taobao and REES46 columns are the real logs in ../shared/datasets, which are\n"
        "2-3 hour windows, so their activity and popularity shares are compared with the generated log's\n"
        "earliest slice of the same number of events. Which shape came from which log: bench/calibration.py.\n"
    )


if __name__ == "__main__":
    main()
