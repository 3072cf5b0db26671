{#-
  "Latest" aggregates with a deterministic tie-break (source_file, source_row), so that rebuilding
  the same input always yields the same features.
-#}

{% macro latest_rating() -%}
  {#- The rating of the most recent rating event in the group (NULL when there is none). -#}
  first(rating order by event_time desc, source_file desc, source_row desc)
    filter (where event_type = 'rating')
{%- endmacro %}


{% macro latest_catalog_value(column) -%}
  {#- The most recently observed non-null value of a raw_items column (observed_at may be NULL). -#}
  first({{ column }} order by observed_at desc nulls last, source_file desc)
    filter (where {{ column }} is not null)
{%- endmacro %}
