{% macro user_item_aggregates(events) %}
  {#-
    One row per (user_id, item_id) of `events` (a relation or CTE with stg_interactions' columns):
    event counts, the latest rating and the weighted strength. fct_user_item_interactions (all
    events) and fct_train_user_item (events before the cutoff) must agree on this definition, so
    it lives here once.
  -#}
  {%- set weights = recsys_event_weights() -%}
  select
      user_id,
      item_id,
      n_views,
      n_addtocarts,
      n_transactions,
      n_ratings,
      last_rating,
      first_event_time,
      last_event_time,
      cast({{ weights['view'] }} as double) * n_views
        + cast({{ weights['addtocart'] }} as double) * n_addtocarts
        + cast({{ weights['transaction'] }} as double) * n_transactions
        + cast({{ weights['rating'] }} as double) * coalesce(last_rating, 0) as strength
  from (
      select
          user_id,
          item_id,
          count(*) filter (where event_type = 'view') as n_views,
          count(*) filter (where event_type = 'addtocart') as n_addtocarts,
          count(*) filter (where event_type = 'transaction') as n_transactions,
          count(*) filter (where event_type = 'rating') as n_ratings,
          {{ latest_rating() }} as last_rating,
          min(event_time) as first_event_time,
          max(event_time) as last_event_time
      from {{ events }}
      group by user_id, item_id
  ) as pair_counts
{% endmacro %}
