-- The append functions look up stream heads, idempotency keys and claims one index probe per
-- element of their array arguments, and plan each statement once per session.
--
-- Their statements join the arrays with streams, idempotency_keys and unique_claims. With the
-- planner free to choose, a table whose statistics say it is small (a new database, or one whose
-- streams outgrew its last ANALYZE) is read whole and hashed on every batch: under
-- `ordo-bench load` the heads check ran as a hash join over a sequential scan of streams and
-- took 1.8-5.8 ms per batch, the largest part of the writer's time. A batch touches a few dozen
-- rows: index probes are right whatever the tables' sizes, so the functions plan without
-- sequential scans, hash joins or merge joins.
--
-- With the default plan_cache_mode the plan cache also planned every statement again on every
-- call (a custom plan for the arrays' actual lengths looked cheaper than the generic one): about
-- 0.26 ms of a single-request batch's 0.66 ms in the database (pgbench calling
-- ordo_append_checked with one event, synchronous_commit off so the flush is left out). The
-- generic plans are the same index probes and set-based inserts whatever the lengths.
ALTER FUNCTION ordo_append_checked
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off
    SET enable_hashjoin = off
    SET enable_mergejoin = off;
ALTER FUNCTION ordo_append_batch
    SET plan_cache_mode = force_generic_plan
    SET enable_seqscan = off
    SET enable_hashjoin = off
    SET enable_mergejoin = off;
