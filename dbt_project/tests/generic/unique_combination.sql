{#-
  Fails for every combination of `columns` that occurs more than once in the model: the composite
  key check (dbt_utils' unique_combination_of_columns) without a package, because `dbt deps`
  would need the network at run time.
-#}
{% test unique_combination(model, columns) %}

select
    {{ columns | join(', ') }},
    count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
