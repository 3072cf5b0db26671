{#-
  The time that splits train from holdout: the (1 - holdout_fraction) quantile of event_time.
  quantile_disc picks an observed event time, so the holdout (event_time >= cutoff) is never empty
  when there are events.
-#}
{%- set holdout_fraction = recsys_holdout_fraction() -%}

with

events as (
    select event_time from {{ ref('stg_interactions') }}
)

select
    quantile_disc(event_time, {{ 1 - holdout_fraction }}) as cutoff_time,
    min(event_time) as min_event_time,
    max(event_time) as max_event_time
from events
