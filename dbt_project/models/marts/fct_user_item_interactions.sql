{#- Every event, aggregated per (user, item): the input of the final models and of popularity. -#}
{{ user_item_aggregates(ref('stg_interactions')) }}
