{#- The same aggregates as fct_user_item_interactions, over events before the holdout cutoff only. -#}
with

cutoff as (
    select cutoff_time from {{ ref('int_holdout_cutoff') }}
),

train_events as (
    select events.*
    from {{ ref('stg_interactions') }} as events
    cross join cutoff
    where events.event_time < cutoff.cutoff_time
)

{{ user_item_aggregates('train_events') }}
