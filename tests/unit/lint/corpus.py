# ruff: noqa: E501  # SQL kept on one line each, as written in migrations
"""Real-world-shaped migration statements: the dangerous and the safe form of each change.

Each case is one step's SQL, its phase and declared category, and the exact set of
rule ids ``check`` must report (ours and squawk's). Sources: the PostgreSQL
documentation (ALTER TABLE notes on rewrites and locks), squawk's rule docs, and
the usual zero-downtime recipes (expand/contract, NOT VALID then VALIDATE,
CREATE INDEX CONCURRENTLY then ADD CONSTRAINT ... USING INDEX).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One corpus entry."""

    id: str
    sql: str
    expected: frozenset[str]
    phase: str = "schema"
    category: str | None = None


def case(
    id: str,
    sql: str,
    *expected: str,
    phase: str = "schema",
    category: str | None = None,
) -> Case:
    """Build a case expecting exactly the rule ids *expected*."""
    return Case(id, sql, frozenset(expected), phase, category)


CASES = [
    # -- create table ---------------------------------------------------------------
    case(
        "create_table",
        "CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " email text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
    ),
    case(
        "create_table_if_not_exists_bigserial",
        "CREATE TABLE IF NOT EXISTS leads (id bigserial PRIMARY KEY, name text)",
    ),
    case(
        "create_table_with_fk",
        "CREATE TABLE invoices (id bigserial PRIMARY KEY,"
        " account_id bigint NOT NULL REFERENCES accounts (id))",
    ),
    case(
        "create_table_then_index_same_step",
        "CREATE TABLE events (id bigserial PRIMARY KEY, kind text);\n"
        "CREATE INDEX events_kind_idx ON events (kind);",
    ),
    case(
        "create_table_then_alter_same_step",
        "CREATE TABLE audit (id bigint PRIMARY KEY, payload jsonb);\n"
        "ALTER TABLE audit ADD COLUMN actor text NOT NULL;\n"
        "ALTER TABLE audit ADD CONSTRAINT audit_actor_key UNIQUE (actor);\n"
        "ALTER TABLE audit ALTER COLUMN payload TYPE json;",
    ),
    case(
        "create_table_as",
        "CREATE TABLE leads_archive AS SELECT * FROM leads WHERE created_at < now()",
    ),
    case("create_view", "CREATE OR REPLACE VIEW active_leads AS SELECT * FROM leads"),
    case("create_schema", "CREATE SCHEMA IF NOT EXISTS reporting"),
    case("create_extension", "CREATE EXTENSION IF NOT EXISTS pgcrypto"),
    case(
        "create_function",
        "CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN NEW.updated_at = now(); RETURN NEW; END $$",
    ),
    case(
        "create_trigger",
        "CREATE TRIGGER leads_touch BEFORE UPDATE ON leads"
        " FOR EACH ROW EXECUTE FUNCTION touch()",
    ),
    case("comment_on_column", "COMMENT ON COLUMN leads.email IS 'primary contact'"),
    case("create_sequence", "CREATE SEQUENCE IF NOT EXISTS invoice_numbers"),
    # -- add column --------------------------------------------------------------------
    case("add_column_nullable", "ALTER TABLE leads ADD COLUMN score bigint"),
    case(
        "add_column_if_not_exists",
        "ALTER TABLE leads ADD COLUMN IF NOT EXISTS notes text",
    ),
    case(
        "add_column_constant_default",
        "ALTER TABLE leads ADD COLUMN order_index bigint NOT NULL DEFAULT 0",
    ),
    case(
        "add_column_stable_default_now",
        "ALTER TABLE leads ADD COLUMN seen_at timestamptz DEFAULT now()",
    ),
    case(
        "add_column_not_null_no_default",
        "ALTER TABLE leads ADD COLUMN region text NOT NULL",
        "adding-required-field",
    ),
    case(
        "add_column_bigserial",
        "ALTER TABLE leads ADD COLUMN seq bigserial",
        "volatile-default-rewrite",
    ),
    case(
        "add_column_serial",
        "ALTER TABLE leads ADD COLUMN legacy_id serial",
        "volatile-default-rewrite",
    ),
    case(
        "add_column_uuid_default",
        "ALTER TABLE leads ADD COLUMN public_id uuid DEFAULT gen_random_uuid()",
        "volatile-default-rewrite",
    ),
    case(
        "add_column_clock_timestamp",
        "ALTER TABLE leads ADD COLUMN touched_at timestamptz DEFAULT clock_timestamp()",
        "volatile-default-rewrite",
    ),
    case(
        "add_column_random",
        "ALTER TABLE leads ADD COLUMN bucket float8 NOT NULL DEFAULT random()",
        "volatile-default-rewrite",
    ),
    case(
        "add_column_identity",
        "ALTER TABLE leads ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY",
        "volatile-default-rewrite",
    ),
    case(
        "add_column_stored_generated",
        "ALTER TABLE leads ADD COLUMN email_lower text"
        " GENERATED ALWAYS AS (lower(email)) STORED",
        "volatile-default-rewrite",
    ),
    case(
        "add_column_then_set_default_safe",
        "ALTER TABLE leads ADD COLUMN public_id uuid;\n"
        "ALTER TABLE leads ALTER COLUMN public_id SET DEFAULT gen_random_uuid();",
    ),
    case(
        "add_serial_primary_key",
        "ALTER TABLE legacy ADD COLUMN id bigserial PRIMARY KEY",
        "volatile-default-rewrite",
        "adding-serial-primary-key-field",
    ),
    # -- NOT NULL --------------------------------------------------------------------
    case(
        "set_not_null_direct",
        "ALTER TABLE leads ALTER COLUMN phone SET NOT NULL",
        "adding-not-nullable-field",
    ),
    case(
        "set_not_null_via_check_same_step",
        "ALTER TABLE leads ADD CONSTRAINT leads_email_nn"
        " CHECK (email IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE leads VALIDATE CONSTRAINT leads_email_nn;\n"
        "ALTER TABLE leads ALTER COLUMN email SET NOT NULL;\n"
        "ALTER TABLE leads DROP CONSTRAINT leads_email_nn;",
        # NOT VALID then VALIDATE in one transaction: the lock is held throughout.
        "constraint-missing-not-valid",
    ),
    case(
        "not_null_check_not_valid",
        "ALTER TABLE leads ADD CONSTRAINT leads_name_nn"
        " CHECK (name IS NOT NULL) NOT VALID",
    ),
    case(
        "not_null_check_validate",
        "ALTER TABLE leads VALIDATE CONSTRAINT leads_name_nn",
    ),
    case(
        "set_not_null_alone",
        # Another step may have validated a CHECK: this step's SQL cannot tell.
        "ALTER TABLE leads ALTER COLUMN name SET NOT NULL",
        "adding-not-nullable-field",
    ),
    case(
        "validate_then_set_not_null_step",
        "ALTER TABLE leads VALIDATE CONSTRAINT leads_name_nn;\n"
        "ALTER TABLE leads ALTER COLUMN name SET NOT NULL;\n"
        "ALTER TABLE leads DROP CONSTRAINT leads_name_nn;",
    ),
    case(
        "drop_not_null",
        "ALTER TABLE leads ALTER COLUMN region DROP NOT NULL",
        "ban-drop-not-null",
    ),
    # -- constraints -------------------------------------------------------------------
    case(
        "add_fk_validating",
        "ALTER TABLE messages ADD CONSTRAINT messages_lead_fk"
        " FOREIGN KEY (lead_id) REFERENCES leads (id)",
        "adding-foreign-key-constraint",
        "constraint-missing-not-valid",
    ),
    case(
        "add_fk_not_valid",
        "ALTER TABLE messages ADD CONSTRAINT messages_lead_fk"
        " FOREIGN KEY (lead_id) REFERENCES leads (id) NOT VALID",
    ),
    case(
        "validate_fk",
        "ALTER TABLE messages VALIDATE CONSTRAINT messages_lead_fk",
    ),
    case(
        "add_check_validating",
        "ALTER TABLE leads ADD CONSTRAINT leads_score_positive CHECK (score >= 0)",
        "constraint-missing-not-valid",
    ),
    case(
        "add_check_not_valid",
        "ALTER TABLE leads ADD CONSTRAINT leads_score_positive"
        " CHECK (score >= 0) NOT VALID",
    ),
    case(
        "add_unique_constraint",
        "ALTER TABLE leads ADD CONSTRAINT leads_email_key UNIQUE (email)",
        "disallowed-unique-constraint",
    ),
    case(
        "add_primary_key_constraint",
        "ALTER TABLE legacy ADD CONSTRAINT legacy_pkey PRIMARY KEY (id)",
        "adding-serial-primary-key-field",
    ),
    case(
        "add_unique_using_index",
        "ALTER TABLE leads ADD CONSTRAINT leads_email_key"
        " UNIQUE USING INDEX leads_email_idx",
    ),
    case(
        "add_primary_key_using_index",
        "ALTER TABLE legacy ADD CONSTRAINT legacy_pkey PRIMARY KEY USING INDEX legacy_id_idx",
    ),
    case(
        "drop_constraint",
        "ALTER TABLE leads DROP CONSTRAINT IF EXISTS leads_old_check",
        "ban-drop-constraint",
    ),
    # -- indexes -----------------------------------------------------------------------
    case(
        "create_index_blocking",
        "CREATE INDEX leads_email_idx ON leads (email)",
        "require-concurrent-index",
    ),
    case(
        "create_unique_index_blocking",
        "CREATE UNIQUE INDEX IF NOT EXISTS messages_provider_key"
        " ON messages (provider_msg_id) WHERE provider_msg_id IS NOT NULL",
        "require-concurrent-index",
    ),
    case(
        "create_index_concurrently_in_schema_step",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS leads_email_idx ON leads (email)",
        "concurrent-index-outside-index-phase",
    ),
    case(
        "create_index_concurrently_in_index_step",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS leads_email_idx ON leads (email)",
        phase="index",
    ),
    case(
        "create_unique_index_concurrently_in_index_step",
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS messages_provider_key"
        " ON messages (provider_msg_id) WHERE provider_msg_id IS NOT NULL",
        phase="index",
    ),
    case(
        "create_index_blocking_in_index_step",
        "CREATE INDEX leads_name_idx ON leads (name)",
        "require-concurrent-index",
        phase="index",
    ),
    case(
        "drop_index_concurrently_in_index_step",
        "DROP INDEX CONCURRENTLY IF EXISTS leads_old_idx",
        phase="index",
    ),
    case(
        "drop_index_blocking",
        "DROP INDEX IF EXISTS leads_old_idx",
        "require-concurrent-index-deletion",
    ),
    case(
        "reindex_blocking",
        "REINDEX INDEX leads_email_idx",
        "require-concurrent-index",
        "require-concurrent-reindex",
    ),
    case(
        "reindex_concurrently_in_index_step",
        "REINDEX INDEX CONCURRENTLY leads_email_idx",
        phase="index",
    ),
    case(
        "analyze_in_index_step",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS leads_score_idx ON leads (score);\n"
        "ANALYZE leads;",
        phase="index",
    ),
    case(
        "alter_table_in_index_step",
        "ALTER TABLE leads ADD COLUMN tag text",
        "non-index-sql-in-index-step",
        phase="index",
    ),
    case(
        "update_in_index_step",
        "UPDATE leads SET score = 0 WHERE score IS NULL",
        "non-index-sql-in-index-step",
        phase="index",
    ),
    case(
        "maintenance_work_mem_in_index_step",
        "SET maintenance_work_mem = '1GB';\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS leads_name_idx ON leads (name);",
        "session-setting",
        phase="index",
    ),
    # -- drop / rename / type ------------------------------------------------------
    case("drop_column", "ALTER TABLE leads DROP COLUMN legacy_flag", "ban-drop-column"),
    case("drop_table", "DROP TABLE IF EXISTS old_leads", "ban-drop-table"),
    case(
        "rename_column",
        "ALTER TABLE leads RENAME COLUMN name TO full_name",
        "renaming-column",
    ),
    case("rename_table", "ALTER TABLE leads RENAME TO contacts", "renaming-table"),
    case(
        "change_column_type",
        "ALTER TABLE leads ALTER COLUMN score TYPE numeric",
        "changing-column-type",
    ),
    case(
        "change_column_type_using",
        "ALTER TABLE leads ALTER COLUMN external_id TYPE bigint USING external_id::bigint",
        "changing-column-type",
    ),
    case(
        "expand_new_column_instead_of_type_change",
        "ALTER TABLE leads ADD COLUMN score_v2 numeric",
    ),
    # -- enums -----------------------------------------------------------------------
    case("create_enum", "CREATE TYPE lead_status AS ENUM ('new', 'won', 'lost')"),
    case(
        "enum_add_value",
        "ALTER TYPE lead_status ADD VALUE IF NOT EXISTS 'archived'",
    ),
    case(
        "enum_add_value_before",
        "ALTER TYPE lead_status ADD VALUE 'qualified' BEFORE 'won'",
    ),
    # -- data changes in schema steps -------------------------------------------------
    case(
        "update_without_category",
        "UPDATE leads SET order_index = id WHERE order_index IS NULL",
        "dml-needs-category",
    ),
    case(
        "one_time_backfill_update",
        "UPDATE leads SET order_index = id WHERE order_index IS NULL",
        category="one_time_backfill",
    ),
    case(
        "one_time_backfill_insert_select",
        "INSERT INTO lead_stats (lead_id, messages)"
        " SELECT lead_id, count(*) FROM messages GROUP BY lead_id",
        category="one_time_backfill",
    ),
    case(
        "one_time_backfill_delete",
        "DELETE FROM leads WHERE email IS NULL",
        "one-time-backfill-not-update",
        category="one_time_backfill",
    ),
    case(
        "seed_values",
        "INSERT INTO plans (code, name) VALUES ('free', 'Free'), ('pro', 'Pro')"
        " ON CONFLICT (code) DO NOTHING",
        category="seed",
    ),
    case(
        "seed_select_from_values_join",
        "INSERT INTO messages (lead_id, body)\n"
        "SELECT l.id, v.body FROM (VALUES ('ada@example.com', 'Hello')) AS v(email, body)\n"
        "JOIN leads l ON l.email = v.email",
        category="seed",
    ),
    case(
        "seed_insert_if_missing",
        "INSERT INTO settings (key, value) SELECT 'theme', 'dark'"
        " WHERE NOT EXISTS (SELECT 1 FROM settings WHERE key = 'theme')",
        category="seed",
    ),
    case(
        "seed_copying_a_table",
        "INSERT INTO leads_copy SELECT * FROM leads",
        "seed-not-literal-insert",
        category="seed",
    ),
    case(
        "seed_generate_series",
        "INSERT INTO slots (n) SELECT g FROM generate_series(1, 1000000) AS g",
        "seed-not-literal-insert",
        category="seed",
    ),
    case(
        "seed_update",
        "UPDATE plans SET name = 'Pro' WHERE code = 'pro'",
        "seed-not-literal-insert",
        category="seed",
    ),
    case(
        "insert_without_category",
        "INSERT INTO plans (code) VALUES ('team')",
        "dml-needs-category",
    ),
    case(
        "dedup_delete_using",
        "DELETE FROM messages m USING messages keep\n"
        "WHERE m.provider_msg_id = keep.provider_msg_id AND m.id > keep.id",
        category="dedup_before_unique",
    ),
    case(
        "dedup_update",
        "UPDATE messages SET provider_msg_id = NULL WHERE id IN (SELECT id FROM dupes)",
        "dedup-not-delete",
        category="dedup_before_unique",
    ),
    case(
        "dedup_delete_everything",
        "DELETE FROM messages",
        "dedup-not-delete",
        category="dedup_before_unique",
    ),
    case(
        "orphan_cleanup_delete",
        "DELETE FROM messages WHERE lead_id IS NOT NULL"
        " AND NOT EXISTS (SELECT 1 FROM leads WHERE leads.id = messages.lead_id)",
        category="orphan_cleanup",
    ),
    case(
        "orphan_cleanup_set_null",
        "UPDATE messages SET lead_id = NULL WHERE lead_id NOT IN (SELECT id FROM leads)",
        category="orphan_cleanup",
    ),
    case(
        "orphan_cleanup_update_values",
        "UPDATE messages SET body = '' WHERE body IS NULL",
        "orphan-cleanup-not-delete",
        category="orphan_cleanup",
    ),
    case(
        "truncate_in_schema_step",
        "TRUNCATE leads CASCADE",
        "dml-needs-category",
        "ban-truncate-cascade",
    ),
    case(
        "category_without_dml",
        "ALTER TABLE leads ADD COLUMN tier text",
        "unneeded-category",
        category="seed",
    ),
    case(
        "data_modifying_cte",
        "WITH moved AS (DELETE FROM inbox WHERE done RETURNING *)"
        " INSERT INTO archive SELECT * FROM moved",
        "dml-needs-category",
    ),
    case(
        "do_block_with_update",
        "DO $$ BEGIN UPDATE leads SET score = 0 WHERE score IS NULL; END $$",
        "dml-in-do-block",
    ),
    case(
        "do_block_dynamic",
        "DO $$ BEGIN EXECUTE format('ALTER TABLE %I ADD COLUMN x int', 'leads'); END $$",
        "dynamic-sql",
    ),
    case(
        "do_block_conditional_constraint",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint"
        " WHERE conname = 'leads_score_positive') THEN"
        " ALTER TABLE leads ADD CONSTRAINT leads_score_positive CHECK (score >= 0)"
        " NOT VALID; END IF; END $$",
    ),
    # -- backfill steps --------------------------------------------------------------
    case(
        "backfill_batch_template",
        "UPDATE leads SET order_index = id WHERE id IN (SELECT id FROM leads"
        " WHERE id > $1 AND order_index = 0 ORDER BY id LIMIT $2)",
        phase="backfill",
    ),
    case(
        "backfill_with_ddl",
        "ALTER TABLE leads ADD COLUMN order_index bigint",
        "ddl-in-backfill-step",
        phase="backfill",
    ),
    case(
        "backfill_with_index",
        "CREATE INDEX leads_order_idx ON leads (order_index)",
        "ddl-in-backfill-step",
        phase="backfill",
    ),
    case(
        "backfill_with_concurrent_index",
        "CREATE INDEX CONCURRENTLY leads_order_idx ON leads (order_index)",
        "concurrent-index-outside-index-phase",
        phase="backfill",
    ),
    # -- transaction-pooling hazards ---------------------------------------------------
    case("set_session", "SET statement_timeout = 0", "session-setting"),
    case("set_local", "SET LOCAL statement_timeout = '5min'"),
    case("reset", "RESET lock_timeout", "session-setting"),
    case("set_role", "SET ROLE migrator", "session-setting"),
    case(
        "set_config_session",
        "SELECT set_config('search_path', 'app', false)",
        "session-setting",
    ),
    case("set_config_local", "SELECT set_config('search_path', 'app', true)"),
    case("discard", "DISCARD ALL", "session-setting"),
    case(
        "session_advisory_lock",
        "SELECT pg_advisory_lock(42)",
        "session-advisory-lock",
    ),
    case("xact_advisory_lock", "SELECT pg_advisory_xact_lock(42)"),
    case("listen", "LISTEN lead_events", "session-listen"),
    case("notify", "NOTIFY lead_events, 'schema changed'"),
    case(
        "prepare",
        # PREPARE stores the INSERT, it does not run it: no category needed.
        "PREPARE add_plan (text) AS INSERT INTO plans (code) VALUES ($1)",
        "session-prepare",
    ),
    case(
        "declare_with_hold",
        "DECLARE leads_cur CURSOR WITH HOLD FOR SELECT id FROM leads",
        "session-cursor-with-hold",
    ),
    case("declare_without_hold", "DECLARE leads_cur CURSOR FOR SELECT id FROM leads"),
    case(
        "temp_table",
        "CREATE TEMP TABLE staging (id bigint)",
        "session-temp-table",
    ),
    case(
        "temp_table_on_commit_drop",
        "CREATE TEMP TABLE staging (id bigint) ON COMMIT DROP",
    ),
    case("load", "LOAD 'auto_explain'", "session-load"),
    # -- runner conflicts ------------------------------------------------------------
    case(
        "explicit_transaction",
        "BEGIN;\nALTER TABLE leads ADD COLUMN a text;\nCOMMIT;",
        "transaction-control",
    ),
    case(
        "savepoint",
        "SAVEPOINT before_add;\nALTER TABLE leads ADD COLUMN b text;\n"
        "RELEASE SAVEPOINT before_add;",
        "transaction-control",
    ),
    case("rollback", "ROLLBACK", "transaction-control"),
    # -- suppressions ----------------------------------------------------------------
    case(
        "suppressed_with_reason",
        "-- safe-migrate: ignore require-concurrent-index tiny lookup table (20 rows)\n"
        "CREATE INDEX plans_name_idx ON plans (name);",
    ),
    case(
        "suppressed_squawk_rule_with_reason",
        "ALTER TABLE leads DROP COLUMN legacy_flag;"
        " -- safe-migrate: ignore ban-drop-column unused since v2.3, code removed",
    ),
    case(
        "suppression_without_reason",
        "CREATE INDEX plans_code_idx ON plans (code); -- safe-migrate: ignore"
        " require-concurrent-index",
        "require-concurrent-index",
        "invalid-suppression",
    ),
    case(
        "suppression_of_unknown_rule",
        "-- safe-migrate: ignore no-such-rule because\nALTER TABLE leads ADD COLUMN c text",
        "invalid-suppression",
    ),
    case(
        "unused_suppression",
        "-- safe-migrate: ignore require-concurrent-index not needed\n"
        "ALTER TABLE leads ADD COLUMN d text",
        "unused-suppression",
    ),
    # -- syntax ------------------------------------------------------------------------
    case("syntax_error", "ALTER TABLE leads ADD COLUMN", "sql-syntax-error"),
]
