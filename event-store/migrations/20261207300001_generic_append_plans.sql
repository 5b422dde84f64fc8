-- The append functions run their statements with generic plans.
--
-- Their statements read the functions' array arguments. With the default plan_cache_mode, the
-- plan cache estimates a custom plan (made for the arguments' actual lengths) cheaper than the
-- generic one (which assumes longer arrays), so it plans every statement again on every call:
-- about 0.26 ms of a single-request batch's 0.66 ms in the database, measured with pgbench
-- calling ordo_append_checked with one event (synchronous_commit off, so the flush is left out).
-- The generic plans are the same index lookups and set-based inserts whatever the lengths.
ALTER FUNCTION ordo_append_checked SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION ordo_append_batch SET plan_cache_mode = force_generic_plan;
