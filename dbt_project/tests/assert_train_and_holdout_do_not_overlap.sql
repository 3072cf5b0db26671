{#-
  Train must end strictly before the cutoff and holdout must start at or after it; otherwise the
  evaluation would score models on interactions they were trained on. Returns one row when the
  split leaks. Attached (as a Dagster asset check) to fct_holdout_interactions.
-#}
{{ config(meta={'dagster': {'ref': {'name': 'fct_holdout_interactions'}}}) }}

with

cutoff as (
    select cutoff_time from {{ ref('int_holdout_cutoff') }}
),

train_span as (
    select max(last_event_time) as last_train_time from {{ ref('fct_train_user_item') }}
),

holdout_span as (
    select min(first_event_time) as first_holdout_time from {{ ref('fct_holdout_interactions') }}
)

select
    cutoff.cutoff_time,
    train_span.last_train_time,
    holdout_span.first_holdout_time
from cutoff
cross join train_span
cross join holdout_span
where train_span.last_train_time >= cutoff.cutoff_time
   or holdout_span.first_holdout_time < cutoff.cutoff_time
   or train_span.last_train_time >= holdout_span.first_holdout_time
