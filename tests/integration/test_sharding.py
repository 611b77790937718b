"""The schema is shardable by account (docs/scaling.md, deploy/citus.sql):

1. every statement of the hot path (the reads and writes of Authorize, Capture and
   Repay, and the idempotency statements) reaches each account table it names within
   one account: a condition `alias.account_id = <parameter or another such table's
   account_id>` among the top-level ANDs of its ON or WHERE, or account_id among the
   columns it inserts (and in its ON CONFLICT target);
2. every unique index of a table that carries account_id includes it, but for the two
   single-database guards that deploy/citus.sql replaces;
3. deploy/citus.sql names every table once and distributes them in an order and a
   shape that Citus accepts; it runs here against stand-ins of Citus's functions that
   record what they were asked and check Citus's rules.

The checks read the SQL itself; each is shown to fail on a statement or schema that
breaks its rule."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from server.db import authorizations, idempotency, loans, repayments

ROOT = Path(__file__).resolve().parents[2]

HOT_PATH = {
    "AUTHORIZE_READ": authorizations.AUTHORIZE_READ,
    "AUTHORIZE_READ_WITH_RISK": authorizations.AUTHORIZE_READ_WITH_RISK,
    "AUTHORIZE_WRITE": authorizations.AUTHORIZE_WRITE,
    "CAPTURE_READ": loans.CAPTURE_READ,
    "CAPTURE_WRITE": loans.CAPTURE_WRITE,
    "CAPTURE_WRITE_CO_FUNDED": loans.CAPTURE_WRITE_CO_FUNDED,
    "REPAY_READ_BY_ACCOUNT": repayments.REPAY_READ_BY_ACCOUNT,
    "REPAY_READ_BY_LOAN": repayments.REPAY_READ_BY_LOAN,
    "REPAY_WRITE": repayments.REPAY_WRITE,
    "REPAY_WRITE_CO_FUNDED": repayments.REPAY_WRITE_CO_FUNDED,
    "IDEMPOTENCY_CLAIM": idempotency.CLAIM,
    "IDEMPOTENCY_LOAD": idempotency.LOAD,
    "IDEMPOTENCY_STORE": idempotency.STORE,
}

# (statement, table, alias): the table references of the hot path that do not stay
# within one account, and why (docs/scaling.md, "Sharding by account").
EXCEPTIONS = {
    ("CAPTURE_READ", "authorizations", "au"):
        "Capture names only the authorization: this is where its account is found",
    ("AUTHORIZE_READ_WITH_RISK", "authorizations", "d"):
        "a risk fact: how many other accounts used the device in 30 days",
    ("AUTHORIZE_READ_WITH_RISK", "authorizations", "ip"):
        "a risk fact: how many other accounts used the address in a day",
}

# The account tables each statement must be seen to touch: the reader below found them.
TOUCHES = {
    "AUTHORIZE_READ": {"accounts", "idempotency_records", "authorizations"},
    "AUTHORIZE_READ_WITH_RISK": {"accounts", "idempotency_records", "authorizations", "loans"},
    "AUTHORIZE_WRITE": {"idempotency_records", "accounts", "authorizations", "risk_decisions"},
    "CAPTURE_READ": {"authorizations", "accounts", "idempotency_records"},
    "CAPTURE_WRITE": {"idempotency_records", "accounts", "authorizations", "loans", "installments",
                      "journal_entries", "postings"},
    "CAPTURE_WRITE_CO_FUNDED": {"idempotency_records", "accounts", "authorizations", "loans", "installments",
                                "journal_entries", "postings", "loan_funding"},
    "REPAY_READ_BY_ACCOUNT": {"accounts", "idempotency_records", "loans", "installments", "loan_funding"},
    "REPAY_READ_BY_LOAN": {"accounts", "idempotency_records", "loans", "installments", "loan_funding"},
    "REPAY_WRITE": {"idempotency_records", "accounts", "installments", "loans", "repayments",
                    "repayment_allocations", "journal_entries", "postings"},
    "REPAY_WRITE_CO_FUNDED": {"idempotency_records", "accounts", "installments", "loans", "repayments",
                              "repayment_allocations", "journal_entries", "postings", "loan_funding",
                              "partner_settlement_items"},
    "IDEMPOTENCY_CLAIM": {"idempotency_records"},
    "IDEMPOTENCY_LOAD": {"idempotency_records"},
    "IDEMPOTENCY_STORE": {"idempotency_records"},
}

# Unique indexes of account tables without account_id: each keeps a rule across
# accounts on a single database, and deploy/citus.sql replaces it.
UNIQUE_WITHOUT_ACCOUNT = {"authorizations_one_live_per_order", "accounts_customer_id_key"}

# ---------------------------------------------------------------------------------------
# Reading SQL: tokens, parenthesized blocks, table references and their conditions.

_TOKEN = re.compile(r"""
    \$\d+                                            # a parameter
  | '(?:[^']|'')*'                                   # a string
  | [A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)?   # a name, maybe qualified
  | ::|<>|<=|>=|!=|\|\|
  | \S
""", re.VERBOSE)

_CLAUSE_ENDS = {"WHERE", "GROUP", "ORDER", "LIMIT", "RETURNING", "HAVING", "FOR", "ON", "JOIN", "LEFT", "RIGHT",
                "INNER", "FULL", "CROSS", "SET", "SELECT", "UNION", "OFFSET", "WINDOW", "VALUES", "DO"}
_KEYWORDS = _CLAUSE_ENDS | {"AS", "LATERAL", "AND", "OR", "NOT", "USING", "WITH", "INSERT", "INTO", "UPDATE",
                            "DELETE", "FROM", "CONFLICT", "NOTHING"}


@dataclass
class Block:
    """The items of one parenthesized level (or the whole statement): tokens, and child
    blocks where parentheses open."""

    items: list = field(default_factory=list)
    parent: Block | None = None


def _blocks(sql: str) -> Block:
    top = current = Block()
    for token in _TOKEN.findall(re.sub(r"--[^\n]*", " ", sql)):
        if token == "(":
            child = Block(parent=current)
            current.items.append(child)
            current = child
        elif token == ")":
            if current.parent is None:
                raise ValueError("unbalanced parentheses")
            current = current.parent
        else:
            current.items.append(token)
    if current is not top:
        raise ValueError("unbalanced parentheses")
    return top


def _word(item) -> str:
    return item.upper() if isinstance(item, str) else ""


def _names(block: Block) -> list[str]:
    return [item for item in block.items if isinstance(item, str) and item != ","]


@dataclass
class Reference:
    statement: str
    table: str
    alias: str
    block: Block
    conditions: list = field(default_factory=list)  # conjuncts: lists of items
    inserted: list[str] | None = None  # INSERT: the columns it sets
    conflict: list[str] | None = None  # INSERT ... ON CONFLICT (columns)


def _clause(items: list, start: int, ends: set[str]) -> list:
    """The items from `start` up to the next word of `ends` at this level."""
    out = []
    for item in items[start:]:
        if _word(item) in ends:
            break
        out.append(item)
    return out


def _conjuncts(items: list) -> list[list]:
    """Top-level ANDs of a condition; a conjunct with a top-level OR says nothing sure."""
    conjuncts: list[list] = []
    current: list = []
    for item in items:
        if _word(item) == "AND":
            conjuncts.append(current)
            current = []
        else:
            current.append(item)
    conjuncts.append(current)
    return [c for c in conjuncts if c and not any(_word(i) == "OR" for i in c)]


def _references(statement: str, sql: str, tables: set[str]) -> list[Reference]:
    found: list[Reference] = []

    def walk(block: Block) -> None:
        items = block.items
        wheres = []
        for at, item in enumerate(items):
            if _word(item) == "WHERE":
                wheres += _conjuncts(_clause(items, at + 1, _CLAUSE_ENDS - {"ON", "SET", "SELECT", "DO"}))
        own: list[Reference] = []
        at = 0
        while at < len(items):
            word = _word(items[at])
            if word == "UPDATE" and at > 0 and _word(items[at - 1]) == "FOR":
                word = ""  # a row lock (SELECT ... FOR UPDATE), not a table being updated
            if word in ("FROM", "JOIN", "UPDATE") or (word == "INTO" and _word(items[at - 1]) == "INSERT"):
                targets = []  # (index of the table name, kind)
                if word == "FROM":
                    # A FROM list: items separated by commas up to the next clause.
                    start = at + 1
                    for position in range(at + 1, len(items) + 1):
                        if position == len(items) or items[position] == "," or _word(items[position]) in _CLAUSE_ENDS:
                            targets.append((start, "from"))
                            start = position + 1
                            if position == len(items) or _word(items[position]) in _CLAUSE_ENDS:
                                break
                else:
                    start = at + 1
                    if _word(items[start]) == "LATERAL":
                        start += 1
                    targets.append((start, {"JOIN": "join", "UPDATE": "update", "INTO": "insert"}[word]))
                for position, kind in targets:
                    if position >= len(items) or not isinstance(items[position], str):
                        continue
                    name = items[position]
                    if name.lower() not in tables or (position + 1 < len(items)
                                                      and isinstance(items[position + 1], Block)
                                                      and kind != "insert"):
                        continue
                    alias_at = position + 1
                    if alias_at < len(items) and _word(items[alias_at]) == "AS":
                        alias_at += 1
                    alias = name
                    if (alias_at < len(items) and isinstance(items[alias_at], str)
                            and re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", items[alias_at])
                            and _word(items[alias_at]) not in _KEYWORDS):
                        alias = items[alias_at]
                    reference = Reference(statement, name.lower(), alias, block)
                    if kind == "join":
                        on = next((i for i in range(alias_at, len(items)) if _word(items[i]) == "ON"), None)
                        if on is not None:
                            reference.conditions += _conjuncts(_clause(items, on + 1, _CLAUSE_ENDS - {"ON"}))
                    if kind == "insert":
                        columns = items[position + 1] if position + 1 < len(items) else None
                        reference.inserted = _names(columns) if isinstance(columns, Block) else []
                        for i in range(position, len(items) - 2):
                            if _word(items[i]) == "ON" and _word(items[i + 1]) == "CONFLICT" \
                                    and isinstance(items[i + 2], Block):
                                reference.conflict = _names(items[i + 2])
                    own.append(reference)
            at += 1
        for reference in own:
            if reference.inserted is None:
                reference.conditions += wheres
        found.extend(own)
        for item in items:
            if isinstance(item, Block):
                walk(item)

    walk(_blocks(sql))
    return found


def _without_casts(conjunct: list) -> list:
    out, skip = [], False
    for item in conjunct:
        if skip:
            skip = False
            continue
        if item == "::":
            skip = True
            continue
        out.append(item)
    return out


def _resolve(alias: str, block: Block | None, references: list[Reference]) -> Reference | None:
    while block is not None:
        for reference in references:
            if reference.block is block and reference.alias == alias:
                return reference
        block = block.parent
    return None


def off_account(statement: str, sql: str, tables: set[str],
                exceptions=frozenset()) -> tuple[list[tuple[str, str, str]], list[Reference]]:
    """The (statement, table, alias) references of `sql` that do not stay within one
    account, and all references found. References in `exceptions` count as within (the
    account is found through them)."""
    references = _references(statement, sql, tables)
    within = {id(r) for r in references if (r.statement, r.table, r.alias) in exceptions}
    for r in references:
        if r.inserted is not None and "account_id" in r.inserted and (
                r.conflict is None or "account_id" in r.conflict):
            within.add(id(r))
    changed = True
    while changed:
        changed = False
        for r in references:
            if id(r) in within or r.inserted is not None:
                continue
            alone = sum(1 for other in references if other.block is r.block) == 1
            mine = {f"{r.alias}.account_id"} | ({"account_id"} if alone else set())
            for conjunct in map(_without_casts, r.conditions):
                if len(conjunct) != 3 or conjunct[1] != "=":
                    continue
                left, _, right = conjunct
                other = right if left in mine else left if right in mine else None
                if other is None:
                    continue
                if re.fullmatch(r"\$\d+", other):
                    within.add(id(r))
                elif other.endswith(".account_id"):
                    source = _resolve(other.split(".")[0], r.block, references)
                    if source is not None and id(source) in within:
                        within.add(id(r))
                if id(r) in within:
                    changed = True
                    break
    return [(r.statement, r.table, r.alias) for r in references if id(r) not in within], references


# ---------------------------------------------------------------------------------------


async def _account_tables(conn: asyncpg.Connection) -> set[str]:
    return {r["table_name"] for r in await conn.fetch("""
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = 'public' AND c.column_name = 'account_id' AND t.table_type = 'BASE TABLE'""")}


@pytest.fixture
async def conn(db_dsn):
    conn = await asyncpg.connect(db_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def account_tables(conn) -> set[str]:
    return await _account_tables(conn)


def test_the_reader_sees_a_missing_filter(account_tables):
    """The rule fails where it should: a statement without the filter, an OR'ed one, a
    join on something else, an insert without the column, and the real statements with
    one filter taken out."""
    assert off_account("S", "SELECT * FROM loans WHERE loan_id = $1", account_tables)[0] == [("S", "loans", "loans")]
    assert off_account("S", "SELECT * FROM loans l WHERE l.account_id = $1 OR l.loan_id = $2",
                       account_tables)[0] == [("S", "loans", "l")]
    assert off_account("S", "SELECT * FROM accounts a JOIN loans l ON l.loan_id = a.account_id "
                            "WHERE a.account_id = $1", account_tables)[0] == [("S", "loans", "l")]
    assert off_account("S", "INSERT INTO postings (entry_id, line) VALUES ($1, $2)",
                       account_tables)[0] == [("S", "postings", "postings")]
    assert off_account("S", "INSERT INTO postings (entry_id, account_id) VALUES ($1, $2) "
                            "ON CONFLICT (entry_id) DO NOTHING", account_tables)[0] == [("S", "postings", "postings")]
    assert off_account("S", "SELECT 1 FROM accounts a, loans l WHERE a.account_id = $1 AND l.account_id = a.account_id",
                       account_tables)[0] == []

    def broken(name: str, sql: str, filter_text: str, replacement: str = "") -> list:
        assert filter_text in sql, filter_text
        return off_account(name, sql.replace(filter_text, replacement, 1), account_tables, EXCEPTIONS)[0]

    assert broken("AUTHORIZE_READ", authorizations.AUTHORIZE_READ, "r.account_id = $1 AND ") == [
        ("AUTHORIZE_READ", "idempotency_records", "r")]
    assert broken("AUTHORIZE_READ", authorizations.AUTHORIZE_READ, "WHERE account_id = $1 AND merchant_id",
                  "WHERE merchant_id") == [("AUTHORIZE_READ", "authorizations", "authorizations")]
    assert broken("CAPTURE_WRITE", loans.CAPTURE_WRITE, " AND account_id = $6 AND status = 'PENDING'") == [
        ("CAPTURE_WRITE", "authorizations", "authorizations")]
    assert broken("REPAY_WRITE", repayments.REPAY_WRITE, "i.account_id = $6 AND ") == [
        ("REPAY_WRITE", "installments", "i")]
    assert broken("REPAY_READ_BY_LOAN", repayments.REPAY_READ_BY_LOAN, "l.account_id = a.account_id AND ") == [
        ("REPAY_READ_BY_LOAN", "loans", "l"), ("REPAY_READ_BY_LOAN", "installments", "i"),
        ("REPAY_READ_BY_LOAN", "loan_funding", "f")]
    assert broken("IDEMPOTENCY_LOAD", idempotency.LOAD, "account_id = $1 AND ") == [
        ("IDEMPOTENCY_LOAD", "idempotency_records", "idempotency_records")]
    assert broken("AUTHORIZE_WRITE", authorizations.AUTHORIZE_WRITE,
                  "ON CONFLICT (account_id, caller,", "ON CONFLICT (caller,") == [
        ("AUTHORIZE_WRITE", "idempotency_records", "idempotency_records")]


def test_every_statement_of_the_hot_path_stays_within_one_account(account_tables):
    seen_exceptions = set()
    for name, sql in HOT_PATH.items():
        off, references = off_account(name, sql, account_tables, EXCEPTIONS)
        assert off == [], f"{name} reaches these tables beyond its account: {off}"
        assert {r.table for r in references} == TOUCHES[name], name
        seen_exceptions |= {(r.statement, r.table, r.alias) for r in references} & EXCEPTIONS.keys()
    # Each exception names a reference that exists and that the rule alone refuses.
    assert seen_exceptions == EXCEPTIONS.keys()
    for statement, table, alias in EXCEPTIONS:
        off, _ = off_account(statement, HOT_PATH[statement], account_tables)
        assert (statement, table, alias) in off


async def _unique_without_account(conn: asyncpg.Connection) -> set[str]:
    """Unique indexes (primary keys included) of tables that carry account_id whose
    columns do not include it."""
    return {r["index_name"] for r in await conn.fetch("""
        SELECT i.indexrelid::regclass::text AS index_name
        FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = 'account_id' AND NOT a.attisdropped
        JOIN pg_class c ON c.oid = i.indrelid
        WHERE i.indisunique AND c.relnamespace = 'public'::regnamespace
          AND NOT (a.attnum = ANY (i.indkey::int2[]))""")}


async def test_every_unique_key_of_an_account_table_includes_the_account(conn):
    assert await _unique_without_account(conn) == UNIQUE_WITHOUT_ACCOUNT
    # The check fails on an index that breaks the rule.
    await conn.execute("CREATE UNIQUE INDEX loans_by_order_only ON loans (merchant_id, order_id)")
    assert await _unique_without_account(conn) == UNIQUE_WITHOUT_ACCOUNT | {"loans_by_order_only"}


# ---------------------------------------------------------------------------------------
# deploy/citus.sql against stand-ins of Citus's functions.

_CITUS_STAND_INS = """
CREATE TABLE citus_layout (
    position serial PRIMARY KEY,
    table_name text NOT NULL,
    kind text NOT NULL,
    column_name text,
    colocate_with text,
    unsafe_triggers text
);
CREATE TABLE citus_functions (name text NOT NULL);
CREATE FUNCTION create_reference_table(relation regclass) RETURNS void LANGUAGE sql AS $$
    INSERT INTO citus_layout (table_name, kind, unsafe_triggers)
    VALUES (relation::text, 'reference', current_setting('citus.enable_unsafe_triggers', true))
$$;
CREATE FUNCTION create_distributed_table(relation regclass, column_name text, colocate_with text DEFAULT 'default')
RETURNS void LANGUAGE sql AS $$
    INSERT INTO citus_layout (table_name, kind, column_name, colocate_with, unsafe_triggers)
    VALUES (relation::text, 'distributed', column_name, colocate_with,
            current_setting('citus.enable_unsafe_triggers', true))
$$;
CREATE FUNCTION create_distributed_function(fn regprocedure) RETURNS void LANGUAGE sql AS $$
    INSERT INTO citus_functions VALUES (fn::text)
$$;
"""


# Tables that have no customer account, distributed by a key of their own in a
# co-location group of their own: (column, colocate_with). A merchant's settled days
# (docs/scaling.md, "Merchant settlement").
BY_OTHER_KEY = {"merchant_settlements": ("merchant_id", "none")}


async def _citus_problems(conn: asyncpg.Connection) -> list[str]:
    """What Citus would refuse in the layout the stand-ins recorded, and what the layout
    leaves out."""
    layout = {r["table_name"]: r for r in await conn.fetch("SELECT * FROM citus_layout ORDER BY position")}
    problems = []
    counts = await conn.fetch("SELECT table_name, count(*) AS n FROM citus_layout GROUP BY 1 HAVING count(*) > 1")
    problems += [f"{r['table_name']} is distributed {r['n']} times" for r in counts]
    tables = {r["relname"] for r in await conn.fetch("""
        SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
          AND relname NOT IN ('schema_migrations', 'citus_layout', 'citus_functions')""")}
    problems += [f"{t} is not in deploy/citus.sql" for t in sorted(tables - layout.keys())]
    problems += [f"{t} is not a table" for t in sorted(layout.keys() - tables)]
    account_tables = await _account_tables(conn)
    for name, row in layout.items():
        if name in account_tables and row["kind"] != "distributed":
            problems.append(f"{name} carries account_id but is not distributed by it")
        if row["kind"] == "distributed" and name in BY_OTHER_KEY:
            if (row["column_name"], row["colocate_with"]) != BY_OTHER_KEY[name]:
                problems.append(f"{name} is distributed by {row['column_name']} with {row['colocate_with']}")
        elif row["kind"] == "distributed":
            if row["column_name"] != "account_id":
                problems.append(f"{name} is distributed by {row['column_name']}")
            wanted = "default" if name == "accounts" else "accounts"
            if row["colocate_with"] != wanted:
                problems.append(f"{name} is co-located with {row['colocate_with']}")
            if row["colocate_with"] in layout and layout[row["colocate_with"]]["position"] > row["position"]:
                problems.append(f"{name} is co-located with a table distributed after it")
    for index in sorted(await _unique_without_account(conn)):
        name = await conn.fetchval("SELECT indrelid::regclass::text FROM pg_index WHERE indexrelid = $1::regclass",
                                   index)
        if layout.get(name, {"kind": None})["kind"] == "distributed":
            problems.append(f"{name}: unique index {index} lacks the distribution column")
    for fk in await conn.fetch("""
            SELECT conname, conrelid::regclass::text AS source, confrelid::regclass::text AS target,
                   ARRAY(SELECT attname FROM pg_attribute WHERE attrelid = conrelid AND attnum = ANY (conkey))
                       AS columns,
                   ARRAY(SELECT attname FROM pg_attribute WHERE attrelid = confrelid AND attnum = ANY (confkey))
                       AS target_columns
            FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"""):
        source, target = layout.get(fk["source"]), layout.get(fk["target"])
        if source is None or target is None:
            continue
        if target["position"] > source["position"]:
            problems.append(f"{fk['conname']}: {fk['target']} is distributed after {fk['source']}")
        if source["kind"] == "reference" and target["kind"] == "distributed":
            problems.append(f"{fk['conname']}: a reference table points at a distributed one")
        if source["kind"] == target["kind"] == "distributed" and not (
                "account_id" in fk["columns"] and "account_id" in fk["target_columns"]):
            problems.append(f"{fk['conname']}: a foreign key between distributed tables lacks account_id")
    triggered = {r["name"] for r in await conn.fetch(
        "SELECT DISTINCT tgrelid::regclass::text AS name FROM pg_trigger WHERE NOT tgisinternal")}
    problems += [f"{name} has triggers but was distributed without citus.enable_unsafe_triggers"
                 for name in sorted(triggered & layout.keys()) if layout[name]["unsafe_triggers"] != "on"]
    functions = {r["name"] for r in await conn.fetch("SELECT name FROM citus_functions")}
    if "credit_write_conflict(text)" not in functions:
        problems.append("credit_write_conflict, which the writes call on the workers, is not distributed")
    if not any(name.startswith("journal_entry_sha256(") for name in functions):
        problems.append("journal_entry_sha256, which posts on the workers, is not distributed")
    return problems


async def test_citus_layout_names_every_table_once_in_a_shape_citus_accepts(conn):
    await conn.execute(_CITUS_STAND_INS)
    await conn.execute((ROOT / "deploy" / "citus.sql").read_text(encoding="utf-8"))
    assert await _citus_problems(conn) == []
    assert "authorizations_one_live_per_account_order" in {
        r["indexname"] for r in await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'authorizations'")}
    # The queries of the hot path still prepare against the distributed schema.
    for sql in HOT_PATH.values():
        await conn.prepare(sql)


async def test_the_citus_checks_fail_on_a_layout_citus_would_refuse(conn):
    await conn.execute(_CITUS_STAND_INS)
    script = (ROOT / "deploy" / "citus.sql").read_text(encoding="utf-8")
    # Without the index swaps, out of order, a table left out, another given twice.
    script = script.replace("DROP INDEX authorizations_one_live_per_order;", "")
    script = script.replace("SELECT create_distributed_table('promises', 'account_id', colocate_with => 'accounts');",
                            "")
    loans_line = "SELECT create_distributed_table('loans', 'account_id', colocate_with => 'accounts');"
    script = script.replace(loans_line, "") + "\n" + loans_line + "\nSELECT create_reference_table('risk_lists');"
    await conn.execute(script)
    problems = await _citus_problems(conn)
    assert "risk_lists is distributed 2 times" in problems
    assert "promises is not in deploy/citus.sql" in problems
    assert "authorizations: unique index authorizations_one_live_per_order lacks the distribution column" in problems
    assert any(p.startswith("installments_loan_fkey: loans is distributed after") for p in problems)
