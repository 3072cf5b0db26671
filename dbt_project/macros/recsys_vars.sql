{#-
  The project's two run-time knobs, read and validated in one place. A typo in an event type or a
  negative weight would otherwise build plausible-looking but wrong features, so every model that
  uses a var goes through these macros and a bad value stops the run with a compilation error.
-#}

{% macro recsys_event_types() %}
  {{ return(['view', 'addtocart', 'transaction', 'rating']) }}
{% endmacro %}


{% macro recsys_event_weights() %}
  {#- var('event_weights'): a weight >= 0 for every event type of recsys_event_types(). -#}
  {%- set weights = var('event_weights') -%}
  {%- set event_types = recsys_event_types() -%}
  {%- if weights is not mapping -%}
    {{ exceptions.raise_compiler_error(
        "var event_weights must map each event type to a weight, got: " ~ weights) }}
  {%- endif -%}
  {%- set unknown = weights.keys() | reject('in', event_types) | list -%}
  {%- if unknown -%}
    {{ exceptions.raise_compiler_error(
        "var event_weights has unknown event types " ~ unknown ~ "; known: " ~ event_types) }}
  {%- endif -%}
  {%- set missing = event_types | reject('in', weights.keys() | list) | list -%}
  {%- if missing -%}
    {{ exceptions.raise_compiler_error(
        "var event_weights is missing a weight for " ~ missing ~ "; give one for each of " ~ event_types) }}
  {%- endif -%}
  {%- for event_type, weight in weights.items() -%}
    {%- if weight is boolean or weight is not number or weight < 0 -%}
      {{ exceptions.raise_compiler_error(
          "var event_weights['" ~ event_type ~ "'] must be a number >= 0, got: " ~ weight) }}
    {%- endif -%}
  {%- endfor -%}
  {{ return(weights) }}
{% endmacro %}


{% macro recsys_holdout_fraction() %}
  {#- var('holdout_fraction'): the share of the latest events held out, strictly between 0 and 1. -#}
  {%- set fraction = var('holdout_fraction') -%}
  {%- if fraction is boolean or fraction is not number or fraction <= 0 or fraction >= 1 -%}
    {{ exceptions.raise_compiler_error(
        "var holdout_fraction must be a number strictly between 0 and 1, got: " ~ fraction) }}
  {%- endif -%}
  {{ return(fraction) }}
{% endmacro %}
