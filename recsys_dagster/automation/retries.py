"""The retry policy of steps whose failures can be transient.

Two causes are worth a second attempt: a DuckDB file lock held by another process (dbt opens the
warehouse itself, without the connect backoff of ``WarehouseResource``; a person may have the file
open in the DuckDB CLI) and a file operation that fails for a moment (model artifacts, the serving
file swap, Parquet exports). Ingestion is deliberately NOT retried: its failures are verdicts on
input files (recorded in ``main.rejected_files``), and a retry would skip the rejected file and turn
the run green, hiding the problem from whoever watches the run list.
"""

from dagster import Backoff, Jitter, RetryPolicy

#: Up to two more attempts, ~10 s then ~20 s later (jittered so that two runs do not retry in step).
STEP_RETRY_POLICY = RetryPolicy(max_retries=2, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
