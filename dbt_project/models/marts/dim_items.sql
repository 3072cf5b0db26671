{#-
  One row per item seen in events or in the catalog. Catalog attributes take, per column, the most
  recently observed non-null value, so a later file without prices does not erase known prices.
  Items that only appear in events keep NULL attributes and in_catalog = false.
-#}
with

catalog_rows as (
    select * from {{ source('warehouse', 'raw_items') }}
    where item_id is not null
),

catalog as (
    select
        item_id,
        {{ latest_catalog_value('name') }} as name,
        {{ latest_catalog_value('category') }} as category,
        {{ latest_catalog_value('brand') }} as brand,
        {{ latest_catalog_value('price') }} as price,
        {{ latest_catalog_value('available') }} as available
    from catalog_rows
    group by item_id
),

item_events as (
    select
        item_id,
        count(distinct user_id) as n_users,
        count(*) as n_events,
        count(*) filter (where event_type = 'transaction') as n_transactions,
        min(event_time) as first_event_time,
        max(event_time) as last_event_time
    from {{ ref('stg_interactions') }}
    group by item_id
)

select
    coalesce(catalog.item_id, item_events.item_id) as item_id,
    catalog.name,
    catalog.category,
    catalog.brand,
    catalog.price,
    catalog.available,
    coalesce(item_events.n_users, 0) as n_users,
    coalesce(item_events.n_events, 0) as n_events,
    coalesce(item_events.n_transactions, 0) as n_transactions,
    item_events.first_event_time,
    item_events.last_event_time,
    catalog.item_id is not null as in_catalog
from catalog
full outer join item_events
    on catalog.item_id = item_events.item_id
