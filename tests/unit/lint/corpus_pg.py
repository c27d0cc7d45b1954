# ruff: noqa: E501  # SQL kept on one line each, as written in migrations
"""Corpus cases for PostgreSQL's semantics: DO blocks, statements that cannot run in
a transaction, blocking rewrites, reads that look like writes, stored settings,
schema-qualified names, NOT VALID + VALIDATE, suppressions of squawk's rules.

Built from the PostgreSQL docs (DO, PL/pgSQL error trapping, VACUUM, CLUSTER,
REFRESH MATERIALIZED VIEW, ALTER TABLE, EXPLAIN, COPY, ALTER ROLE/DATABASE,
"cannot run inside a transaction block") and squawk's rule docs; each rule has
its dangerous form, its safe form and near-misses.
"""

from __future__ import annotations

from .corpus import case

GUARD = "IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'x') THEN "

CASES = [
    # -- DML in DO blocks ----------------------------------------------------------
    case(
        "do_update_default_plan",
        "DO $$ BEGIN UPDATE accounts SET plan = 'free' WHERE plan IS NULL; END $$",
        "dml-in-do-block",
    ),
    case(
        "do_insert_if_missing",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM plans WHERE code = 'free') THEN INSERT INTO plans (code) VALUES ('free'); END IF; END $$",
        "dml-in-do-block",
    ),
    case(
        "do_delete_expired",
        "DO $$ BEGIN DELETE FROM sessions WHERE expires_at < now(); END $$",
        "dml-in-do-block",
    ),
    case(
        "do_execute_literal_update",
        "DO $$ BEGIN EXECUTE 'UPDATE accounts SET plan = ''free'' WHERE plan IS NULL'; END $$",
        "dml-in-do-block",
    ),
    case(
        "do_nested_block_update",
        "DO $$ BEGIN BEGIN UPDATE accounts SET plan = 'free' WHERE plan IS NULL; END; END $$",
        "dml-in-do-block",
    ),
    case(
        "do_loop_update",
        "DO $$ DECLARE r record; BEGIN FOR r IN SELECT id FROM accounts LOOP UPDATE accounts SET plan = 'free' WHERE id = r.id; END LOOP; END $$",
        "dml-in-do-block",
    ),
    case(
        "do_perform_only",
        "DO $$ BEGIN PERFORM 1 FROM accounts LIMIT 1; END $$",
    ),
    case("do_raise_notice_only", "DO $$ BEGIN RAISE NOTICE 'hello'; END $$"),
    case(
        "do_select_into_variable",
        "DO $$ DECLARE n bigint; BEGIN SELECT count(*) INTO n FROM accounts; RAISE NOTICE '%', n; END $$",
    ),
    case(
        "do_insert_seed_category",
        "DO $$ BEGIN INSERT INTO plans (code) VALUES ('pro'); END $$",
        category="seed",
    ),
    case(
        "do_update_in_backfill_step",
        "DO $$ BEGIN UPDATE accounts SET plan = 'free' WHERE plan IS NULL; END $$",
        phase="backfill",
    ),
    case(
        "plain_update_still_dml_needs_category",
        "UPDATE accounts SET plan = 'free' WHERE plan IS NULL",
        "dml-needs-category",
    ),
    # -- DDL in DO blocks ----------------------------------------------------------
    case(
        "do_guarded_unique_constraint",
        "DO $$ BEGIN "
        + GUARD
        + "ALTER TABLE accounts ADD CONSTRAINT accounts_email_key UNIQUE (email); END IF; END $$",
        "disallowed-unique-constraint",
    ),
    case(
        "do_guarded_primary_key",
        "DO $$ BEGIN "
        + GUARD
        + "ALTER TABLE identities ADD PRIMARY KEY (id); END IF; END $$",
        "adding-serial-primary-key-field",
    ),
    case(
        "do_guarded_primary_key_using_index",
        "DO $$ BEGIN "
        + GUARD
        + "ALTER TABLE identities ADD CONSTRAINT identities_pkey PRIMARY KEY USING INDEX identities_id_idx; END IF; END $$",
    ),
    case(
        "do_guarded_unique_using_index",
        "DO $$ BEGIN "
        + GUARD
        + "ALTER TABLE accounts ADD CONSTRAINT accounts_email_key UNIQUE USING INDEX accounts_email_idx; END IF; END $$",
    ),
    case(
        "do_rename_column",
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM information_schema.columns WHERE column_name = 'name') THEN ALTER TABLE accounts RENAME COLUMN name TO full_name; END IF; END $$",
        "renaming-column",
    ),
    case(
        "do_rename_table",
        "DO $$ BEGIN ALTER TABLE IF EXISTS users_old RENAME TO users_archive; END $$",
        "renaming-table",
    ),
    case(
        "do_create_index",
        "DO $$ BEGIN CREATE INDEX accounts_plan_idx ON accounts (plan); END $$",
        "require-concurrent-index",
    ),
    case(
        "do_create_index_concurrently",
        "DO $$ BEGIN CREATE INDEX CONCURRENTLY accounts_plan_idx ON accounts (plan); END $$",
        "concurrent-index-outside-index-phase",
    ),
    case(
        "do_create_index_concurrently_index_step",
        "DO $$ BEGIN CREATE INDEX CONCURRENTLY accounts_plan_idx ON accounts (plan); END $$",
        "concurrent-index-outside-index-phase",
        "non-index-sql-in-index-step",
        phase="index",
    ),
    case(
        "do_add_foreign_key",
        "DO $$ BEGIN "
        + GUARD
        + "ALTER TABLE sessions ADD CONSTRAINT sessions_user_fk FOREIGN KEY (user_id) REFERENCES users (id); END IF; END $$",
        "adding-foreign-key-constraint",
        "constraint-missing-not-valid",
    ),
    case(
        "do_add_foreign_key_not_valid",
        "DO $$ BEGIN "
        + GUARD
        + "ALTER TABLE sessions ADD CONSTRAINT sessions_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID; END IF; END $$",
    ),
    case(
        "do_foreign_key_not_valid_then_validate",
        "DO $$ BEGIN ALTER TABLE sessions ADD CONSTRAINT sessions_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID; ALTER TABLE sessions VALIDATE CONSTRAINT sessions_user_fk; END $$",
        "constraint-missing-not-valid",
    ),
    case(
        "do_create_table_then_index",
        "DO $$ BEGIN CREATE TABLE IF NOT EXISTS audit_log (id bigint PRIMARY KEY, kind text); CREATE INDEX IF NOT EXISTS audit_log_kind_idx ON audit_log (kind); END $$",
    ),
    case(
        "do_create_type_guarded",
        "DO $$ BEGIN CREATE TYPE factor_type AS ENUM ('totp', 'webauthn'); EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    ),
    case(
        "do_add_enum_value_guarded",
        "DO $$ BEGIN ALTER TYPE factor_type ADD VALUE 'phone'; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    ),
    case(
        "do_execute_literal_change_type",
        "DO $$ BEGIN EXECUTE 'ALTER TABLE accounts ALTER COLUMN id TYPE bigint'; END $$",
        "changing-column-type",
    ),
    case(
        "do_execute_literal_add_nullable_column",
        "DO $$ BEGIN EXECUTE 'ALTER TABLE accounts ADD COLUMN IF NOT EXISTS phone text'; END $$",
    ),
    case(
        "do_execute_format_is_dynamic",
        "DO $$ BEGIN EXECUTE format('ALTER TABLE %I ADD COLUMN note text', 'accounts'); END $$",
        "dynamic-sql",
    ),
    case(
        "do_execute_concat_is_dynamic",
        "DO $$ DECLARE t text := 'accounts'; BEGIN EXECUTE 'ALTER TABLE ' || t || ' ADD COLUMN note text'; END $$",
        "dynamic-sql",
    ),
    case(
        "do_add_column_volatile_default",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN token uuid DEFAULT gen_random_uuid(); END $$",
        "volatile-default-rewrite",
    ),
    case(
        "do_add_column_not_null_no_default",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN region text NOT NULL; END $$",
        "adding-required-field",
    ),
    case(
        "do_add_column_nullable",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN IF NOT EXISTS region text; END $$",
    ),
    case(
        "do_drop_column",
        "DO $$ BEGIN ALTER TABLE accounts DROP COLUMN IF EXISTS legacy_flag; END $$",
        "ban-drop-column",
    ),
    case(
        "do_set_not_null",
        "DO $$ BEGIN ALTER TABLE accounts ALTER COLUMN email SET NOT NULL; END $$",
        "adding-not-nullable-field",
    ),
    case(
        "do_commit_inside",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN region text; COMMIT; END $$",
        "transaction-control",
    ),
    case(
        "do_set_config_session",
        "DO $$ BEGIN PERFORM set_config('search_path', 'auth', false); END $$",
        "session-setting",
    ),
    case(
        "do_set_config_local",
        "DO $$ BEGIN PERFORM set_config('search_path', 'auth', true); END $$",
    ),
    case(
        "do_grant_guarded",
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reporting') THEN GRANT SELECT ON accounts TO reporting; END IF; END $$",
    ),
    case(
        "do_comment_on_column",
        "DO $$ BEGIN COMMENT ON COLUMN accounts.plan IS 'billing plan'; END $$",
    ),
    # -- EXCEPTION WHEN handlers --------------------------------------------------
    case(
        "do_when_others_null",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN plan text; EXCEPTION WHEN others THEN NULL; END $$",
        "do-block-swallows-errors",
    ),
    case(
        "do_when_others_notice",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN plan text; EXCEPTION WHEN others THEN RAISE NOTICE 'skipped: %', SQLERRM; END $$",
        "do-block-swallows-errors",
    ),
    case(
        "do_when_lock_not_available_warning",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN plan text; EXCEPTION WHEN lock_not_available THEN RAISE WARNING 'busy'; END $$",
        "do-block-swallows-errors",
    ),
    case(
        "do_when_others_reraise",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN plan text; EXCEPTION WHEN others THEN RAISE NOTICE 'failed'; RAISE; END $$",
    ),
    case(
        "do_when_others_raise_exception",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN plan text; EXCEPTION WHEN others THEN RAISE EXCEPTION 'plan column: %', SQLERRM; END $$",
    ),
    case(
        "do_when_duplicate_column_guard",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN plan text; EXCEPTION WHEN duplicate_column THEN NULL; END $$",
    ),
    case(
        "do_when_duplicate_table_sqlstate_guard",
        "DO $$ BEGIN CREATE TABLE audit_log (id bigint PRIMARY KEY); EXCEPTION WHEN SQLSTATE '42P07' THEN NULL; END $$",
    ),
    case(
        "do_when_unique_violation_sqlstate",
        "DO $$ BEGIN ALTER TABLE accounts ADD CONSTRAINT accounts_email_key UNIQUE USING INDEX accounts_email_idx; EXCEPTION WHEN SQLSTATE '23505' THEN NULL; END $$",
        "do-block-swallows-errors",
    ),
    case(
        "do_when_undefined_object_guard",
        "DO $$ BEGIN ALTER TABLE accounts DROP CONSTRAINT accounts_old_check; EXCEPTION WHEN undefined_object THEN NULL; END $$",
        "ban-drop-constraint",
    ),
    case(
        "do_nested_block_swallows",
        "DO $$ BEGIN BEGIN ALTER TABLE accounts ADD COLUMN plan text; EXCEPTION WHEN others THEN NULL; END; END $$",
        "do-block-swallows-errors",
    ),
    case(
        "do_handler_conditional_reraise",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN plan text; EXCEPTION WHEN others THEN IF SQLSTATE = '42701' THEN NULL; ELSE RAISE; END IF; END $$",
    ),
    case(
        "do_insert_swallow_unique_violation",
        "DO $$ BEGIN INSERT INTO plans (code) VALUES ('free'); EXCEPTION WHEN unique_violation THEN NULL; END $$",
        "dml-in-do-block",
        "do-block-swallows-errors",
    ),
    # -- statements that cannot run in a transaction block -------------------------
    case("vacuum_in_schema_step", "VACUUM accounts", "cannot-run-in-transaction"),
    case(
        "vacuum_analyze_in_schema_step",
        "VACUUM (ANALYZE) accounts",
        "cannot-run-in-transaction",
    ),
    case(
        "vacuum_full_in_schema_step",
        "VACUUM FULL accounts",
        "cannot-run-in-transaction",
    ),
    case("analyze_in_schema_step", "ANALYZE accounts"),
    case("vacuum_in_index_step", "VACUUM (ANALYZE) accounts", phase="index"),
    case(
        "vacuum_in_backfill_step",
        "VACUUM accounts",
        "cannot-run-in-transaction",
        phase="backfill",
    ),
    case("create_database", "CREATE DATABASE reporting", "cannot-run-in-transaction"),
    case(
        "drop_database",
        "DROP DATABASE IF EXISTS reporting",
        "cannot-run-in-transaction",
        "ban-drop-database",
    ),
    case(
        "alter_system_set",
        "ALTER SYSTEM SET max_connections = 200",
        "cannot-run-in-transaction",
    ),
    case(
        "alter_system_reset", "ALTER SYSTEM RESET work_mem", "cannot-run-in-transaction"
    ),
    case(
        "create_tablespace",
        "CREATE TABLESPACE fast LOCATION '/mnt/fast'",
        "cannot-run-in-transaction",
    ),
    case("cluster_every_table", "CLUSTER", "cannot-run-in-transaction"),
    case(
        "detach_partition_concurrently_schema_step",
        "ALTER TABLE events DETACH PARTITION events_2023 CONCURRENTLY",
        "cannot-run-in-transaction",
    ),
    case(
        "detach_partition_plain",
        "ALTER TABLE events DETACH PARTITION events_2023",
        "require-concurrent-partition-detach",
    ),
    case(
        "detach_partition_finalize",
        "ALTER TABLE events DETACH PARTITION events_2023 FINALIZE",
    ),
    case(
        "attach_partition",
        "ALTER TABLE events ATTACH PARTITION events_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    ),
    case(
        "alter_database_set_tablespace",
        "ALTER DATABASE app SET TABLESPACE fast",
        "cannot-run-in-transaction",
    ),
    case(
        "do_execute_create_database",
        "DO $$ BEGIN EXECUTE 'CREATE DATABASE reporting'; END $$",
        "cannot-run-in-transaction",
    ),
    case(
        "do_execute_vacuum",
        "DO $$ BEGIN EXECUTE 'VACUUM accounts'; END $$",
        "cannot-run-in-transaction",
    ),
    # -- rewrites under ACCESS EXCLUSIVE -------------------------------------------
    case(
        "cluster_table",
        "CLUSTER accounts USING accounts_pkey",
        "blocking-table-rewrite",
    ),
    case(
        "refresh_materialized_view",
        "REFRESH MATERIALIZED VIEW account_totals",
        "blocking-table-rewrite",
    ),
    case(
        "refresh_materialized_view_concurrently",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY account_totals",
    ),
    case(
        "refresh_materialized_view_with_no_data",
        "REFRESH MATERIALIZED VIEW account_totals WITH NO DATA",
    ),
    case(
        "create_matview_then_refresh",
        "CREATE MATERIALIZED VIEW plan_totals AS SELECT plan, count(*) FROM accounts GROUP BY plan WITH NO DATA;\n"
        "REFRESH MATERIALIZED VIEW plan_totals;",
    ),
    case(
        "set_tablespace",
        "ALTER TABLE accounts SET TABLESPACE fast",
        "blocking-table-rewrite",
    ),
    case("set_logged", "ALTER TABLE imports SET LOGGED", "blocking-table-rewrite"),
    case("set_unlogged", "ALTER TABLE imports SET UNLOGGED", "blocking-table-rewrite"),
    case(
        "create_unlogged_then_set_logged",
        "CREATE UNLOGGED TABLE staging_rows (id bigint PRIMARY KEY);\n"
        "ALTER TABLE staging_rows SET LOGGED;",
    ),
    case(
        "alter_table_set_fillfactor",
        "ALTER TABLE accounts SET (fillfactor = 90)",
    ),
    case(
        "alter_table_set_statistics",
        "ALTER TABLE accounts ALTER COLUMN plan SET STATISTICS 500",
    ),
    # -- reads that look like writes -----------------------------------------------
    case("explain_update", "EXPLAIN UPDATE accounts SET plan = 'free'"),
    case(
        "explain_analyze_update",
        "EXPLAIN ANALYZE UPDATE accounts SET plan = 'free'",
        "dml-needs-category",
    ),
    case(
        "explain_analyze_on_insert",
        "EXPLAIN (ANALYZE on, BUFFERS) INSERT INTO plans (code) VALUES ('x')",
        "dml-needs-category",
    ),
    case(
        "explain_analyze_false_delete",
        "EXPLAIN (ANALYZE false) DELETE FROM sessions",
    ),
    case("explain_costs_off_delete", "EXPLAIN (COSTS off) DELETE FROM sessions"),
    case("explain_analyze_select", "EXPLAIN ANALYZE SELECT count(*) FROM accounts"),
    case("copy_table_to_stdout", "COPY accounts TO STDOUT WITH (FORMAT csv)"),
    case(
        "copy_query_to_stdout",
        "COPY (SELECT id, email FROM accounts) TO STDOUT",
    ),
    case(
        "copy_from_stdin",
        "COPY plans (code) FROM STDIN",
        "dml-needs-category",
    ),
    case("copy_to_in_index_step", "COPY accounts TO STDOUT", phase="index"),
    # -- stored settings are not session state -------------------------------------
    case("alter_role_set_search_path", "ALTER ROLE app SET search_path = auth, public"),
    case(
        "alter_role_in_database_set",
        "ALTER ROLE app IN DATABASE app SET statement_timeout = '5s'",
    ),
    case("alter_role_reset", "ALTER ROLE app RESET search_path"),
    case(
        "alter_database_set_timezone",
        "ALTER DATABASE app SET timezone TO 'UTC'",
    ),
    case(
        "alter_function_set_search_path",
        "ALTER FUNCTION auth.uid() SET search_path = auth, pg_temp",
    ),
    case(
        "create_function_with_set",
        "CREATE OR REPLACE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE SET search_path = '' AS $$ SELECT current_setting('request.jwt.claim.role', true) $$",
    ),
    case(
        "set_search_path_session", "SET search_path = auth, public", "session-setting"
    ),
    case("set_local_search_path", "SET LOCAL search_path = auth, public"),
    case("set_session_timezone", "SET SESSION timezone = 'UTC'", "session-setting"),
    case("reset_all", "RESET ALL", "session-setting"),
    case("set_transaction_isolation", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
    case(
        "select_set_config_session",
        "SELECT set_config('app.tenant', 'a', false)",
        "session-setting",
    ),
    case(
        "select_set_config_local",
        "SELECT set_config('app.tenant', 'a', true)",
    ),
    # -- created earlier in this step: schemas and quoting --------------------------
    case(
        "create_in_staging_then_index_public",
        "CREATE TABLE staging.events (id bigint PRIMARY KEY, kind text);\n"
        "CREATE INDEX events_kind_idx ON events (kind);",
        "require-concurrent-index",
    ),
    case(
        "create_in_staging_then_index_staging",
        "CREATE TABLE staging.events (id bigint PRIMARY KEY, kind text);\n"
        "CREATE INDEX events_kind_idx ON staging.events (kind);",
    ),
    case(
        "create_quoted_then_index_unquoted",
        'CREATE TABLE "Events" (id bigint PRIMARY KEY, kind text);\n'
        "CREATE INDEX events_kind_idx ON events (kind);",
        "require-concurrent-index",
    ),
    case(
        "create_quoted_then_index_quoted",
        'CREATE TABLE "Events" (id bigint PRIMARY KEY, kind text);\n'
        'CREATE INDEX events_kind_idx ON "Events" (kind);',
    ),
    case(
        "create_unqualified_then_index_public",
        "CREATE TABLE events (id bigint PRIMARY KEY, kind text);\n"
        "CREATE INDEX events_kind_idx ON public.events (kind);",
    ),
    case(
        "create_mixed_case_unquoted_then_index",
        "CREATE TABLE Events (id bigint PRIMARY KEY, kind text);\n"
        "CREATE INDEX events_kind_idx ON EVENTS (kind);",
    ),
    case(
        "create_public_then_volatile_column",
        "CREATE TABLE public.audit (id bigint PRIMARY KEY);\n"
        "ALTER TABLE audit ADD COLUMN token uuid DEFAULT gen_random_uuid();",
    ),
    case(
        "create_staging_then_volatile_column_public",
        "CREATE TABLE staging.audit (id bigint PRIMARY KEY);\n"
        "ALTER TABLE audit ADD COLUMN token uuid DEFAULT gen_random_uuid();",
        "volatile-default-rewrite",
    ),
    case(
        "create_staging_then_unique_public",
        "CREATE TABLE staging.audit (id bigint PRIMARY KEY, ref text);\n"
        "ALTER TABLE audit ADD CONSTRAINT audit_ref_key UNIQUE (ref);",
        "disallowed-unique-constraint",
    ),
    case(
        "create_then_fk_same_step",
        "CREATE TABLE invoices_v2 (id bigint PRIMARY KEY, account_id bigint);\n"
        "ALTER TABLE invoices_v2 ADD CONSTRAINT invoices_v2_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id);",
    ),
    # -- NOT VALID and VALIDATE ----------------------------------------------------
    case(
        "check_not_valid_then_validate_same_step",
        "ALTER TABLE accounts ADD CONSTRAINT accounts_plan_check CHECK (plan IN ('free', 'pro')) NOT VALID;\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT accounts_plan_check;",
        "constraint-missing-not-valid",
    ),
    case(
        "fk_not_valid_then_validate_same_step",
        "ALTER TABLE sessions ADD CONSTRAINT sessions_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) NOT VALID;\n"
        "ALTER TABLE sessions VALIDATE CONSTRAINT sessions_account_fk;",
        "constraint-missing-not-valid",
    ),
    case(
        "check_not_valid_alone",
        "ALTER TABLE accounts ADD CONSTRAINT accounts_plan_check CHECK (plan IN ('free', 'pro')) NOT VALID",
    ),
    case(
        "validate_alone",
        "ALTER TABLE accounts VALIDATE CONSTRAINT accounts_plan_check",
    ),
    case(
        "fk_not_valid_in_index_phase_style_backfill",
        "ALTER TABLE sessions ADD CONSTRAINT sessions_account_fk FOREIGN KEY (account_id) REFERENCES accounts (id) NOT VALID",
    ),
    case(
        "check_not_valid_then_validate_other",
        "ALTER TABLE accounts ADD CONSTRAINT accounts_plan_check CHECK (plan IN ('free', 'pro')) NOT VALID;\n"
        "ALTER TABLE accounts VALIDATE CONSTRAINT accounts_email_check;",
    ),
    # -- suppressions of any rule check can print ----------------------------------
    case(
        "suppressed_renaming_column",
        "-- safe-migrate: ignore renaming-column the old name is read by no deployed code\n"
        "ALTER TABLE accounts RENAME COLUMN name TO full_name;",
    ),
    case(
        "alter_index_rename",
        "ALTER INDEX accounts_email_idx RENAME TO accounts_email_key_idx",
        "renaming-object",
    ),
    case(
        "suppressed_renaming_object",
        "-- safe-migrate: ignore renaming-object index names are not referenced\n"
        "ALTER INDEX accounts_email_idx RENAME TO accounts_email_key_idx;",
    ),
    case(
        "suppressed_ban_drop_column",
        "-- safe-migrate: ignore ban-drop-column unused since release 41\n"
        "ALTER TABLE accounts DROP COLUMN legacy_flag;",
    ),
    case(
        "suppressed_our_rule_in_do_block",
        "-- safe-migrate: ignore dml-in-do-block three rows, reviewed\n"
        "DO $$ BEGIN UPDATE plans SET label = 'Free' WHERE code = 'free'; END $$;",
    ),
    case(
        "suppressed_squawk_rule_in_do_block",
        "-- safe-migrate: ignore renaming-column no reader of the old name remains\n"
        "DO $$ BEGIN ALTER TABLE accounts RENAME COLUMN name TO full_name; END $$;",
    ),
    case(
        "suppression_without_reason_squawk",
        "-- safe-migrate: ignore renaming-column\n"
        "ALTER TABLE accounts RENAME COLUMN name TO full_name;",
        "invalid-suppression",
        "renaming-column",
    ),
    case(
        "suppression_of_unknown_rule_squawk",
        "-- safe-migrate: ignore renaming-columns typo in the id\n"
        "ALTER TABLE accounts RENAME COLUMN name TO full_name;",
        "invalid-suppression",
        "renaming-column",
    ),
    # -- more dangerous, safe and near-miss forms ----------------------------------
    case(
        "drop_index_plain",
        "DROP INDEX accounts_plan_idx",
        "require-concurrent-index-deletion",
    ),
    case(
        "drop_index_concurrently_index_step",
        "DROP INDEX CONCURRENTLY IF EXISTS accounts_plan_idx",
        phase="index",
    ),
    case(
        "create_index_concurrently_index_step",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_plan_idx ON accounts (plan)",
        phase="index",
    ),
    case(
        "reindex_index_concurrently_index_step",
        "REINDEX INDEX CONCURRENTLY accounts_plan_idx",
        phase="index",
    ),
    case(
        "create_index_in_backfill_step",
        "CREATE INDEX accounts_plan_idx ON accounts (plan)",
        "ddl-in-backfill-step",
        phase="backfill",
    ),
    case(
        "alter_in_index_step",
        "ALTER TABLE accounts ADD COLUMN plan text",
        "non-index-sql-in-index-step",
        phase="index",
    ),
    case(
        "analyze_in_index_step_v2",
        "ANALYZE accounts",
        phase="index",
    ),
    case(
        "backfill_batched_update",
        "UPDATE accounts SET plan = 'free' WHERE id > 0 AND id <= 1000 AND plan IS NULL",
        phase="backfill",
    ),
    case(
        "backfill_alter",
        "ALTER TABLE accounts ALTER COLUMN plan SET DEFAULT 'free'",
        "ddl-in-backfill-step",
        phase="backfill",
    ),
    case(
        "backfill_do_block_ddl",
        "DO $$ BEGIN ALTER TABLE accounts ADD COLUMN plan text; END $$",
        "ddl-in-backfill-step",
        phase="backfill",
    ),
    case(
        "alter_column_set_default_constant",
        "ALTER TABLE accounts ALTER COLUMN plan SET DEFAULT 'free'",
    ),
    case(
        "alter_column_drop_default",
        "ALTER TABLE accounts ALTER COLUMN plan DROP DEFAULT",
        "ban-drop-default",
    ),
    case(
        "alter_column_type_text",
        "ALTER TABLE accounts ALTER COLUMN plan TYPE text",
        "changing-column-type",
    ),
    case("lock_table_share", "LOCK TABLE accounts IN SHARE MODE"),
    case(
        "create_trigger_on_existing",
        "CREATE TRIGGER accounts_touch BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION touch()",
    ),
    case("comment_on_table", "COMMENT ON TABLE accounts IS 'customer accounts'"),
    case("grant_select", "GRANT SELECT ON accounts TO reporting"),
    case("revoke_select", "REVOKE SELECT ON accounts FROM reporting"),
    case(
        "create_policy",
        "CREATE POLICY accounts_owner ON accounts USING (owner_id = current_user_id())",
    ),
    case("enable_rls", "ALTER TABLE accounts ENABLE ROW LEVEL SECURITY"),
    case("create_sequence_v2", "CREATE SEQUENCE IF NOT EXISTS invoice_numbers"),
    case("alter_sequence_restart", "ALTER SEQUENCE invoice_numbers RESTART WITH 1000"),
    case("create_schema_auth", "CREATE SCHEMA IF NOT EXISTS auth"),
    case(
        "create_enum_type",
        "CREATE TYPE aal_level AS ENUM ('aal1', 'aal2', 'aal3')",
    ),
    case("alter_type_add_value", "ALTER TYPE aal_level ADD VALUE IF NOT EXISTS 'aal4'"),
    case(
        "truncate_in_schema_step_v2",
        "TRUNCATE audit_log",
        "dml-needs-category",
    ),
    case(
        "truncate_cascade",
        "TRUNCATE audit_log CASCADE",
        "dml-needs-category",
        "ban-truncate-cascade",
    ),
    case(
        "pg_advisory_xact_lock",
        "SELECT pg_advisory_xact_lock(42)",
    ),
    case(
        "pg_advisory_lock_session",
        "SELECT pg_advisory_lock(42)",
        "session-advisory-lock",
    ),
    case(
        "temp_table_on_commit_drop_v2",
        "CREATE TEMP TABLE ids ON COMMIT DROP AS SELECT id FROM accounts",
    ),
    case(
        "temp_table_kept",
        "CREATE TEMP TABLE ids AS SELECT id FROM accounts",
        "session-temp-table",
    ),
    case(
        "declare_cursor_without_hold",
        "DECLARE c CURSOR FOR SELECT id FROM accounts",
    ),
    case(
        "declare_cursor_with_hold",
        "DECLARE c CURSOR WITH HOLD FOR SELECT id FROM accounts",
        "session-cursor-with-hold",
    ),
    case("listen_channel", "LISTEN accounts_changed", "session-listen"),
    case("notify_channel", "NOTIFY accounts_changed"),
    case("prepare_statement", "PREPARE q AS SELECT 1", "session-prepare"),
    case(
        "prepare_update_is_not_run",
        "PREPARE purge AS DELETE FROM sessions WHERE expires_at < now()",
        "session-prepare",
    ),
    case("savepoint_in_step", "SAVEPOINT before_change", "transaction-control"),
    case("commit_in_step", "COMMIT", "transaction-control"),
    case(
        "seed_insert_values",
        "INSERT INTO plans (code, label) VALUES ('free', 'Free'), ('pro', 'Pro') ON CONFLICT (code) DO NOTHING",
        category="seed",
    ),
    case(
        "seed_insert_select",
        "INSERT INTO plans (code) SELECT DISTINCT plan FROM accounts",
        "seed-not-literal-insert",
        category="seed",
    ),
    case(
        "seed_update_v2",
        "UPDATE plans SET label = 'Free' WHERE code = 'free'",
        "seed-not-literal-insert",
        category="seed",
    ),
    case(
        "dedup_delete_using_v2",
        "DELETE FROM accounts a USING accounts b WHERE a.email = b.email AND a.id > b.id",
        category="dedup_before_unique",
    ),
    case(
        "dedup_update_v2",
        "UPDATE accounts SET email = NULL WHERE id IN (SELECT id FROM dupes)",
        "dedup-not-delete",
        category="dedup_before_unique",
    ),
    case(
        "orphan_cleanup_delete_not_exists",
        "DELETE FROM sessions s WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = s.account_id)",
        category="orphan_cleanup",
    ),
    case(
        "orphan_cleanup_delete_everything",
        "DELETE FROM sessions",
        "orphan-cleanup-not-delete",
        category="orphan_cleanup",
    ),
    case(
        "one_time_backfill_update_v2",
        "UPDATE accounts SET plan = 'free' WHERE plan IS NULL",
        category="one_time_backfill",
    ),
    case(
        "one_time_backfill_delete_v2",
        "DELETE FROM accounts WHERE plan IS NULL",
        "one-time-backfill-not-update",
        category="one_time_backfill",
    ),
    case(
        "category_without_dml_v2",
        "ALTER TABLE accounts ADD COLUMN plan text",
        "unneeded-category",
        category="seed",
    ),
    # -- what real migrations do (auth servers, SaaS schemas) ----------------------
    case(
        "auth_do_add_primary_key_if_missing",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'refresh_tokens_pkey') THEN ALTER TABLE auth.refresh_tokens ADD CONSTRAINT refresh_tokens_pkey PRIMARY KEY (id); END IF; END $$",
        "adding-serial-primary-key-field",
    ),
    case(
        "auth_do_unique_phone",
        "DO $$ BEGIN ALTER TABLE auth.users ADD CONSTRAINT users_phone_key UNIQUE (phone); EXCEPTION WHEN duplicate_table THEN NULL; WHEN duplicate_object THEN NULL; END $$",
        "disallowed-unique-constraint",
    ),
    case(
        "auth_do_rename_if_exists",
        "DO $$ BEGIN IF EXISTS (SELECT FROM information_schema.columns WHERE table_schema = 'auth' AND column_name = 'email_change_token') THEN ALTER TABLE auth.users RENAME COLUMN email_change_token TO email_change_token_new; END IF; END $$",
        "renaming-column",
    ),
    case(
        "auth_do_type_then_column",
        "DO $$ BEGIN CREATE TYPE auth.factor_status AS ENUM ('unverified', 'verified'); EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n"
        "ALTER TABLE auth.mfa_factors ADD COLUMN IF NOT EXISTS status auth.factor_status;",
    ),
    case(
        "auth_do_backfill_identities",
        "DO $$ BEGIN INSERT INTO auth.identities (id, user_id, provider) SELECT id, id, 'email' FROM auth.users WHERE email IS NOT NULL ON CONFLICT DO NOTHING; END $$",
        "dml-in-do-block",
    ),
    case(
        "auth_do_not_valid_then_validate",
        "DO $$ BEGIN ALTER TABLE auth.sessions ADD CONSTRAINT sessions_user_fk FOREIGN KEY (user_id) REFERENCES auth.users (id) ON DELETE CASCADE NOT VALID; ALTER TABLE auth.sessions VALIDATE CONSTRAINT sessions_user_fk; END $$",
        "constraint-missing-not-valid",
    ),
    case(
        "auth_comment_on_schema",
        "COMMENT ON SCHEMA auth IS 'auth schema'",
    ),
    case(
        "auth_grant_usage",
        "GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role",
    ),
    case(
        "auth_alter_role_search_path",
        "ALTER USER supabase_auth_admin SET search_path = 'auth'",
    ),
    # -- squawk's rule docs ------------------------------------------------------------
    case(
        "create_domain_with_constraint",
        "CREATE DOMAIN positive_int AS bigint CHECK (VALUE > 0)",
        "ban-create-domain-with-constraint",
    ),
    case(
        "alter_domain_add_constraint",
        "ALTER DOMAIN positive_int ADD CONSTRAINT positive_int_check CHECK (VALUE > 0)",
        "ban-alter-domain-with-add-constraint",
    ),
    case("create_domain_plain", "CREATE DOMAIN email_address AS text"),
    case(
        "identifier_too_long",
        "CREATE INDEX CONCURRENTLY accounts_billing_plan_and_region_and_created_at_and_updated_at_idx ON accounts (plan, region, created_at, updated_at)",
        "identifier-too-long",
        phase="index",
    ),
    case("drop_legacy_table", "DROP TABLE IF EXISTS legacy_tokens", "ban-drop-table"),
    case(
        "add_column_jsonb_constant_default",
        "ALTER TABLE accounts ADD COLUMN settings jsonb NOT NULL DEFAULT '{}'::jsonb",
    ),
    case(
        "backfill_duplicate_assignment",
        "UPDATE accounts SET plan = 'free', plan = 'pro' WHERE id > 0 AND id <= 1000",
        "ban-duplicate-column-assignments",
        phase="backfill",
    ),
    # -- stored code is not run -------------------------------------------------------
    case(
        "create_function_with_update",
        "CREATE OR REPLACE FUNCTION touch_account(a bigint) RETURNS void LANGUAGE sql AS $$ UPDATE accounts SET updated_at = now() WHERE id = a $$",
    ),
    case(
        "create_plpgsql_function_with_vacuum_text",
        "CREATE OR REPLACE FUNCTION maintenance() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'VACUUM accounts'; END $$",
    ),
    case(
        "create_rule_with_delete",
        "CREATE RULE protect AS ON DELETE TO plans DO INSTEAD NOTHING",
    ),
    case(
        "do_language_plpython",
        "DO LANGUAGE plpython3u $$ plpy.execute('UPDATE accounts SET plan = NULL') $$",
        "dynamic-sql",
    ),
    case(
        "cte_delete_in_select",
        "WITH gone AS (DELETE FROM sessions WHERE expires_at < now() RETURNING id) SELECT count(*) FROM gone",
        "dml-needs-category",
    ),
    case(
        "merge_in_schema_step",
        "MERGE INTO plans p USING new_plans n ON p.code = n.code WHEN NOT MATCHED THEN INSERT (code) VALUES (n.code)",
        "dml-needs-category",
    ),
    case(
        "select_into_backup_table",
        "SELECT * INTO accounts_backup FROM accounts",
    ),
    # -- a new enum value is unusable until its transaction commits -----------------
    case(
        "enum_value_added_then_default",
        "ALTER TYPE aal_level ADD VALUE 'aal4';\n"
        "ALTER TABLE sessions ALTER COLUMN aal SET DEFAULT 'aal4';",
        "enum-value-used-in-same-step",
    ),
    case(
        "enum_value_added_then_updated",
        "ALTER TYPE factor_type ADD VALUE IF NOT EXISTS 'phone';\n"
        "UPDATE mfa_factors SET factor_type = 'phone' WHERE phone IS NOT NULL;",
        "enum-value-used-in-same-step",
        category="one_time_backfill",
    ),
    case(
        "enum_value_added_in_do_then_used_in_do",
        "DO $$ BEGIN ALTER TYPE factor_type ADD VALUE 'phone'; EXCEPTION WHEN duplicate_object THEN NULL; END $$;\n"
        "DO $$ BEGIN ALTER TABLE mfa_factors ALTER COLUMN factor_type SET DEFAULT 'phone'; END $$;",
        "enum-value-used-in-same-step",
    ),
    case(
        "enum_value_added_other_value_used",
        "ALTER TYPE aal_level ADD VALUE 'aal4';\n"
        "ALTER TABLE sessions ALTER COLUMN aal SET DEFAULT 'aal1';",
    ),
    case(
        "enum_value_renamed_then_used",
        "ALTER TYPE aal_level RENAME VALUE 'aal0' TO 'aal1';\n"
        "ALTER TABLE sessions ALTER COLUMN aal SET DEFAULT 'aal1';",
        # Renaming a value breaks readers of the old one (squawk's warning).
        "renaming-object",
    ),
    case(
        "enum_value_added_then_index_in_other_step_shape",
        "ALTER TYPE aal_level ADD VALUE 'aal4' AFTER 'aal3'",
    ),
]
