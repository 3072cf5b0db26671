{#- One row per user with activity counts and the span of their events. -#}
select
    user_id,
    count(distinct item_id) as n_items,
    count(*) as n_events,
    count(*) filter (where event_type = 'transaction') as n_transactions,
    min(event_time) as first_event_time,
    max(event_time) as last_event_time
from {{ ref('stg_interactions') }}
group by user_id
