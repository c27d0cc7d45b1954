"""The example app's expected end state, and what a database says about a run.

After a run (finished or not), :func:`snapshot` reads the schema, the rows and an
audit log from the database, and :func:`classify` says whether it is in the
*initial* state (neither table exists), the *expected* one (every step of
example_app applied once), or neither (*half-applied*), and whether any step was
applied twice.

"Applied twice" is read from an audit log that the steps cannot avoid: the
database is made from a template whose event trigger attaches a row trigger to
``leads`` and ``messages`` as soon as they are created. The trigger writes one
audit row per inserted, updated or deleted row, in the same transaction, so only
what committed is counted. The seed inserts 2 leads and 4 messages and the
backfill sets ``order_index`` once per lead: more than that is a step applied
twice, whatever the final rows look like.
"""

from __future__ import annotations

import dataclasses
import typing as t

#: (table, column, data type) of the expected schema.
EXPECTED_COLUMNS = frozenset(
    {
        ("leads", "id", "bigint"),
        ("leads", "name", "text"),
        ("leads", "email", "text"),
        ("leads", "created_at", "timestamp with time zone"),
        ("leads", "order_index", "bigint"),
        ("messages", "id", "bigint"),
        ("messages", "lead_id", "bigint"),
        ("messages", "provider_msg_id", "text"),
        ("messages", "body", "text"),
        ("messages", "created_at", "timestamp with time zone"),
    }
)
EXPECTED_LEADS = frozenset(
    {("Ada Lovelace", "ada@example.com"), ("Alan Turing", "alan@example.com")}
)
#: provider_msg_id -> email of its lead, after the dedup and the orphan cleanup.
EXPECTED_MESSAGES = {"msg-1": "ada@example.com", "msg-2": "alan@example.com"}
SEED_LEAD_INSERTS = 2
SEED_MESSAGE_INSERTS = 4
#: The unique index the steps build, as pg_get_indexdef shows it (name aside).
EXPECTED_INDEX_TAIL = (
    "USING btree (provider_msg_id) WHERE (provider_msg_id IS NOT NULL)"
)

TEMPLATE_SQL = """
CREATE SCHEMA bench;
CREATE TABLE bench.audit (
    id bigserial PRIMARY KEY,
    tbl text NOT NULL,
    op text NOT NULL,
    row_id bigint,
    email text,
    provider_msg_id text,
    old_order_index bigint,
    new_order_index bigint
);
CREATE FUNCTION bench.audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
    o jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN r := to_jsonb(OLD); ELSE r := to_jsonb(NEW); END IF;
    IF TG_OP = 'UPDATE' THEN o := to_jsonb(OLD); END IF;
    INSERT INTO bench.audit
        (tbl, op, row_id, email, provider_msg_id, old_order_index, new_order_index)
    VALUES (TG_TABLE_NAME, TG_OP, (r->>'id')::bigint, r->>'email',
            r->>'provider_msg_id', (o->>'order_index')::bigint,
            (r->>'order_index')::bigint);
    RETURN NULL;
END $$;
CREATE FUNCTION bench.attach_audit() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
    obj record;
BEGIN
    FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
               WHERE command_tag = 'CREATE TABLE'
                 AND object_identity IN ('public.leads', 'public.messages')
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgrelid = obj.objid AND tgname = 'bench_audit') THEN
            EXECUTE format('CREATE TRIGGER bench_audit AFTER INSERT OR UPDATE OR '
                           'DELETE ON %s FOR EACH ROW EXECUTE FUNCTION '
                           'bench.audit_row()', obj.object_identity);
        END IF;
    END LOOP;
END $$;
CREATE EVENT TRIGGER bench_attach_audit ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION bench.attach_audit();
"""

Row = tuple[t.Any, ...]
Query = t.Callable[[str], list[Row]]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What the database holds after a run."""

    tables: frozenset[str]
    columns: frozenset[tuple[str, str, str]]
    #: (id, name, email, order_index)
    leads: tuple[tuple[int, str, str | None, int | None], ...] = ()
    #: (id, lead_id, provider_msg_id)
    messages: tuple[tuple[int, int | None, str | None], ...] = ()
    #: (is_unique, is_valid, pg_get_indexdef) of the indexes on messages
    indexes: tuple[tuple[bool, bool, str], ...] = ()
    #: (table, op, row_id, email, provider_msg_id, old_order_index) committed
    audit: tuple[tuple[str, str, int, str | None, str | None, int | None], ...] = ()


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The state a run left: ``initial``, ``expected`` or ``half``, and why."""

    state: t.Literal["initial", "expected", "half"]
    problems: tuple[str, ...] = ()
    applied_twice: tuple[str, ...] = ()


def classify(snap: Snapshot) -> Verdict:
    """Compare ``snap`` with the initial and the expected state."""
    twice = tuple(_applied_twice(snap))
    if not snap.tables & {"leads", "messages"}:
        return Verdict("initial", (), twice)
    problems = _differences(snap)
    return Verdict("half" if problems else "expected", tuple(problems), twice)


def _differences(snap: Snapshot) -> list[str]:
    problems: list[str] = []
    for table in ("leads", "messages"):
        if table not in snap.tables:
            problems.append(f"table {table} is missing")
    missing = EXPECTED_COLUMNS - snap.columns
    extra = snap.columns - EXPECTED_COLUMNS
    if missing:
        problems.append("missing columns: " + _columns(missing))
    if extra:
        problems.append("unexpected columns: " + _columns(extra))
    leads = sorted((name, email) for _, name, email, _ in snap.leads)
    if leads != sorted(EXPECTED_LEADS):
        problems.append(f"leads are {leads}, expected {sorted(EXPECTED_LEADS)}")
    not_backfilled = [i for i, _, _, order in snap.leads if order != i]
    if not_backfilled:
        problems.append(f"order_index != id for lead ids {not_backfilled}")
    email_of = {i: email for i, _, email, _ in snap.leads}
    messages = sorted(
        (str(provider), email_of.get(lead or -1, "?"))
        for _, lead, provider in snap.messages
    )
    if messages != sorted(EXPECTED_MESSAGES.items()):
        problems.append(
            f"messages (provider id, lead email) are {messages}, expected "
            f"{sorted(EXPECTED_MESSAGES.items())}"
        )
    kept = [i for i, _, provider in snap.messages if provider == "msg-1"]
    inserted = [
        row_id
        for table, op, row_id, _, provider, _ in snap.audit
        if table == "messages" and op == "INSERT" and provider == "msg-1"
    ]
    if kept and inserted and kept != [min(inserted)]:
        problems.append(f"dedup kept msg-1 id {kept}, not min(id) {min(inserted)}")
    valid_unique = [
        d for unique, valid, d in snap.indexes if unique and valid and _is_ours(d)
    ]
    if not valid_unique:
        problems.append("no valid unique index on messages(provider_msg_id)")
    invalid = [d for _, valid, d in snap.indexes if not valid]
    if invalid:
        problems.append(f"INVALID index left behind: {invalid}")
    return problems


def _is_ours(definition: str) -> bool:
    return definition.endswith(EXPECTED_INDEX_TAIL)


def _columns(columns: t.Iterable[tuple[str, str, str]]) -> str:
    return ", ".join(
        f"{table}.{column} {kind}" for table, column, kind in sorted(columns)
    )


def _applied_twice(snap: Snapshot) -> list[str]:
    found: list[str] = []
    lead_inserts: dict[str | None, int] = {}
    message_inserts = 0
    backfilled: dict[int, int] = {}
    for table, op, row_id, email, _, _ in snap.audit:
        if table == "leads" and op == "INSERT":
            lead_inserts[email] = lead_inserts.get(email, 0) + 1
        elif table == "messages" and op == "INSERT":
            message_inserts += 1
        elif table == "leads" and op == "UPDATE":
            backfilled[row_id] = backfilled.get(row_id, 0) + 1
    for email, count in sorted(lead_inserts.items(), key=lambda kv: str(kv[0])):
        if count > 1:
            found.append(f"seed inserted lead {email} {count} times")
    if message_inserts > SEED_MESSAGE_INSERTS:
        found.append(
            f"seed inserted {message_inserts} messages, not {SEED_MESSAGE_INSERTS}"
        )
    for lead, count in sorted(backfilled.items()):
        if count > 1:
            found.append(f"lead {lead} updated {count} times by the backfill")
    return found


def snapshot(query: Query) -> Snapshot:
    """Read a :class:`Snapshot` through ``query`` (SQL in, rows out; direct access)."""
    tables = frozenset(
        str(r[0])
        for r in query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_name IN ('leads', 'messages')"
        )
    )
    columns = frozenset(
        (str(r[0]), str(r[1]), str(r[2]))
        for r in query(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name IN ('leads', 'messages')"
        )
    )
    has_order = ("leads", "order_index", "bigint") in columns
    leads: tuple[tuple[int, str, str | None, int | None], ...] = ()
    if "leads" in tables:
        order = "order_index" if has_order else "NULL::bigint"
        leads = tuple(
            (int(r[0]), str(r[1]), r[2], r[3])
            for r in query(f"SELECT id, name, email, {order} FROM leads ORDER BY id")
        )
    messages: tuple[tuple[int, int | None, str | None], ...] = ()
    indexes: tuple[tuple[bool, bool, str], ...] = ()
    if "messages" in tables:
        messages = tuple(
            (int(r[0]), r[1], r[2])
            for r in query(
                "SELECT id, lead_id, provider_msg_id FROM messages ORDER BY id"
            )
        )
        indexes = tuple(
            (bool(r[0]), bool(r[1]), str(r[2]))
            for r in query(
                "SELECT i.indisunique, i.indisvalid, pg_get_indexdef(i.indexrelid) "
                "FROM pg_index i WHERE i.indrelid = 'public.messages'::regclass "
                "AND NOT i.indisprimary ORDER BY i.indexrelid"
            )
        )
    audit = tuple(
        (str(r[0]), str(r[1]), int(r[2]), r[3], r[4], r[5])
        for r in query(
            "SELECT tbl, op, row_id, email, provider_msg_id, old_order_index "
            "FROM bench.audit ORDER BY id"
        )
    )
    return Snapshot(tables, columns, leads, messages, indexes, audit)
