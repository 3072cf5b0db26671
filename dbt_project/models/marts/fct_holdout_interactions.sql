{#-
  What each user did after the cutoff, per (user, item), with the flags evaluation needs to tell
  cold-start users and re-interactions apart from genuinely new items for known users.
-#}
with

cutoff as (
    select cutoff_time from {{ ref('int_holdout_cutoff') }}
),

holdout_events as (
    select events.*
    from {{ ref('stg_interactions') }} as events
    cross join cutoff
    where events.event_time >= cutoff.cutoff_time
),

train_pairs as (
    select user_id, item_id from {{ ref('fct_train_user_item') }}
),

train_users as (
    select distinct user_id from train_pairs
),

holdout_pairs as (
    select
        user_id,
        item_id,
        count(*) as n_events,
        count(*) filter (where event_type = 'transaction') as n_transactions,
        {{ latest_rating() }} as last_rating,
        min(event_time) as first_event_time
    from holdout_events
    group by user_id, item_id
)

select
    holdout_pairs.user_id,
    holdout_pairs.item_id,
    holdout_pairs.n_events,
    holdout_pairs.n_transactions,
    holdout_pairs.last_rating,
    holdout_pairs.first_event_time,
    train_users.user_id is not null as user_in_train,
    train_pairs.user_id is not null as seen_in_train
from holdout_pairs
left join train_users
    on holdout_pairs.user_id = train_users.user_id
left join train_pairs
    on holdout_pairs.user_id = train_pairs.user_id
    and holdout_pairs.item_id = train_pairs.item_id
