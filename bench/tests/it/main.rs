//! Integration tests of the benchmark's own machinery against a real PostgreSQL.

mod generated_log;
