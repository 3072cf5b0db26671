{#- Fails unless the model holds exactly one row (single-row parameter tables such as the cutoff). -#}
{% test exactly_one_row(model) %}

select n_rows
from (select count(*) as n_rows from {{ model }}) as row_count
where n_rows <> 1

{% endtest %}
