"""The PL/Python side of in-database scoring: what the functions in sql/install.sql call.

An adapter at the edge. ``scorekit._boot()`` imports it inside the database server; ``import
scorekit`` never does. It turns rows, trigger data and jsonb text into plain records and columns
for :class:`Model`, and scorekit's errors into PostgreSQL errors with their SQLSTATE.

One :class:`Runtime` per connection, kept in PL/Python's GD:

- models are loaded once per (name, version, engine), from scorekit.models, sha256-checked;
- each attached table has a scoring state, read (one small query, which also resolves the
  deployed version) by the first trigger call of each top-level statement, except where a
  statement of the same transaction read it and nothing can have changed since: the server's
  snapshot is the same (no other transaction has ended) and this connection has changed no
  deployment or attachment in the transaction. The other rows of the statement are scored with
  no query at all, and one statement never mixes versions: a promote takes effect for the
  statements that start after it commits.
"""

from __future__ import annotations

import functools
import json
import re
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

from ._bundle import PICKLE_FILE, PMML_FILE, Bundle, sha256_hex
from ._errors import (
    InputError,
    IntegrityError,
    ModelNotFoundError,
    Problem,
    ScorekitError,
    UnsupportedModelError,
    UsageError,
)
from ._loading import open_scorer, parse_ref
from ._manifest import Manifest
from ._model import Model
from ._output import PREDICTION, finite_or_none
from ._schema import MESSAGE_PROBLEMS, invalid_input_error, json_kind
from ._store import CHAMPION
from ._tables import (
    NUMERIC_CATEGORY,
    STRING_CATEGORY,
    UNKEYABLE,
    Column,
    is_number,
    map_features,
    map_outputs,
)

# engine => 'auto' tries these in order. pypmml is not offered: it would start a JVM inside the
# database server.
DB_ENGINES = ("native", "sklearn")
MODES = ("row", "statement")
ON_ERROR = ("raise", "null")
MODEL_CACHE_SIZE = 8  # loaded (name, version, engine) per connection; the oldest is dropped
CHUNK_ROWS = 10_000  # rows per vectorised call when a statement or a rescore scores many rows
# A statement of at most this many rows is scored a record at a time, as the row trigger scores:
# numpy's fixed cost per call (in a warm loop, 0.1 ms for logistic regression and 0.35 ms for
# boosting) is some 17 and 45 records' worth.
RECORD_ROWS = 8

# mode 'row': BEFORE INSERT OR UPDATE OF <features> ... FOR EACH ROW scores the row in place
ROW_TRIGGER = "scorekit_row"
# mode 'statement': AFTER INSERT ... FOR EACH STATEMENT scores the statement's rows; an UPDATE of
# the features is scored at its end too, the row trigger noting each row's key for the other
INSERTED_TRIGGER = "scorekit_inserted"
UPDATED_ROW_TRIGGER = "scorekit_updated_row"  # AFTER UPDATE OF <features> ... FOR EACH ROW
UPDATED_TRIGGER = "scorekit_updated"  # AFTER UPDATE OF <features> ... FOR EACH STATEMENT
TRIGGERS = (ROW_TRIGGER, INSERTED_TRIGGER, UPDATED_ROW_TRIGGER, UPDATED_TRIGGER)
TRANSITION_TABLE = "scorekit_new"
ACTION_UPDATED = "updated"  # what score_updated scores, as messages name it (not a trigger)

SNAPSHOT_TRIES = 20  # disagreements of a SnapshotReader before the query is kept for good
# (xmin, xmax, the sorted in-progress xids), in 32 bits: a snapshot as a SnapshotReader reads it
Snapshot = tuple[int, int, tuple[int, ...]]
# PostgreSQL versions (server_version_num) whose SnapshotData starts as SnapshotReader reads it
SNAPSHOT_LAYOUT_VERSIONS = range(120000, 190000)

F = TypeVar("F", bound=Callable[..., Any])
# What the installed SQL functions expect of this module; sql/install.sql names the same number.
# A connection that imported an older scorekit before an upgrade is asked to reconnect.
API = 4


@dataclass
class TableScoring:
    """How one attached table is scored, for the statement that is running (and the next ones of
    its transaction, while nothing changes)."""

    table: str  # schema-qualified, quoted: safe to put in SQL
    model: Model
    version: int
    features: list[tuple[str, str]]  # (model field, table column)
    outputs: list[tuple[str, str]]  # (output column of the model, table column)
    version_column: str | None
    on_error: str
    key_columns: list[str]
    token: str  # the attachment row's xmin: it changes whenever the row does
    types: dict[str, Column]  # the table's columns
    statement: object = None  # the statement this state serves, as Runtime keys statements
    xact_start: int | None = None  # the start of the transaction that read it (with the clock)
    # The snapshot the state was read under (pg_current_snapshot()'s text, or a SnapshotReader's
    # reading), if later statements of its transaction may keep the state while the snapshot
    # stays the same (None: read it again for the next one).
    snapshot: str | Snapshot | None = None
    rows: int = 0  # rows seen by the row trigger in this statement, for messages
    # the prepared UPDATEs that write scores back by primary key, by the output (if any) that
    # the UPDATE computes as 1 - another and whether it updates a range of keys (see
    # Runtime._write_back)
    write_plans: dict[tuple[str | None, bool], Any] = field(default_factory=dict)
    # the prepared queries that read rows to score (see Runtime._score_rows), by their SQL
    read_plans: dict[str, Any] = field(default_factory=dict)
    # per primary key column: the type its index compares as, and that = operator's schema
    key_equality: list[tuple[str, str]] | None = None

    def __post_init__(self) -> None:
        self.columns = [column for _, column in self.features]  # in the schema's field order
        self.score_record = self.model.record_scorer(self.columns)
        produced = self.model.output_columns
        lost = [output for output, _ in self.outputs if output not in produced]
        if lost:
            raise UsageError(
                f"model {self.model.ref} does not produce {', '.join(lost)}, which the "
                f"attachment of {self.table} writes to column(s) "
                f"{', '.join(c for o, c in self.outputs if o in lost)}; it produces "
                f"{', '.join(produced)}. Attach the table again to map its outputs"
            )
        probability = {name: j for j, name in enumerate(produced[1:])}
        # (table column, index into the probabilities; -1 for the prediction)
        self.writes = [
            (column, -1 if output == PREDICTION else probability[output])
            for output, column in self.outputs
        ]

    def column_of(self, field_name: str | None) -> str | None:
        return next((c for f, c in self.features if f == field_name), None)


def _edge(method: F) -> F:
    """Turn what a PL/Python entry point raises into a PostgreSQL error: scorekit's errors with
    their SQLSTATE and message, anything else as an internal error without a traceback in the
    message (it goes to DETAIL). PostgreSQL's own errors (SPIError) pass through unchanged."""

    @functools.wraps(method)
    def wrapper(self: Runtime, *args: Any) -> Any:
        try:
            return method(self, *args)
        except (self.plpy.Error, self.plpy.SPIError, self.plpy.Fatal):
            raise
        except ScorekitError as exc:
            self.fail(exc)
        except Exception as exc:
            self.plpy.error(
                f"scorekit internal error in {method.__name__}: {type(exc).__name__}: {exc}",
                detail=traceback.format_exc(limit=8),
                sqlstate="XX000",
            )

    return wrapper  # type: ignore[return-value]


class Runtime:
    """Everything one database connection scores with; the SQL functions call its methods."""

    API = API

    def __init__(self, plpy: Any, gd: dict[str, Any] | None = None) -> None:
        self.plpy = plpy
        self._plans: dict[str, Any] = {}
        self._models: OrderedDict[tuple[str, int, str], Model] = OrderedDict()
        self._tables: dict[str, TableScoring] = {}  # by the table's oid, as TD["relid"] gives it
        # by table oid: the statement whose UPDATE noted them, and the keys (as text) of the rows
        # it updated that its statement trigger is to score (see note_updated)
        self._updated: dict[str, tuple[object, list[list[str]]]] = {}
        self.loads = 0  # models loaded by this connection
        self.reads = 0  # attachment states read (refresh), rather than kept by the snapshot check
        self._statement_clock = statement_clock()
        if self._statement_clock is not None and not self._clock_agrees():
            self._statement_clock = None
        # How a kept state's snapshot is read: through ctypes once _verify_snapshot has seen
        # that reading agree with pg_current_snapshot(); until then, and where it never does,
        # with that query (see _unchanged).
        self._snapshot_reader: SnapshotReader | None = None
        self._unverified_reader = snapshot_reader(self._server_version())
        self._snapshot_tries = 0
        # PL/Python's GD, where scorekit._changed() counts this connection's changes to
        # scorekit.deployments and scorekit.attachments; None where that trigger is not
        # installed, and then every statement reads its table's state again.
        self._gd = gd if gd is not None and self._changes_counted() else None
        self._changes_seen = 0
        self._changed_xact_start: int | None = None  # the transaction charged with the last one

    # --- plumbing -----------------------------------------------------------------------------
    def _clock_agrees(self) -> bool:
        """statement_clock() reads what statement_timestamp() and transaction_timestamp() say
        (microseconds since 2000-01-01, PostgreSQL's epoch); checked once per connection."""
        assert self._statement_clock is not None
        # Seconds since 1970 as text, the arithmetic in Python: numeric - integer in SQL would
        # resolve through the caller's search_path (see sql/install.sql).
        row = self._query(
            "SELECT extract(epoch FROM statement_timestamp())::text AS s, "
            "extract(epoch FROM transaction_timestamp())::text AS t"
        )[0]
        since_2000 = [int((Decimal(row[k]) - 946_684_800) * 1_000_000) for k in ("s", "t")]
        return bool(tuple(since_2000) == self._statement_clock())

    def _server_version(self) -> int:
        rows = self._query("SELECT pg_catalog.current_setting('server_version_num') AS v")
        return int(rows[0]["v"])

    def _verify_snapshot(self, shown: str) -> Snapshot | None:
        """Read snapshots through the SnapshotReader from now on if its reading agrees with
        ``shown``, pg_current_snapshot()'s text that a refresh just read, and return that
        reading; None otherwise. The struct's scalars are compared first, and only when they
        agree its list of xids, which takes following a pointer. The refresh's query may run
        under a later snapshot than the statement's, where a transaction ended in between: a
        reading that is older in that way is tried again at the next refresh, any other
        disagreement counts, and after SNAPSHOT_TRIES of those the query is kept for good."""
        reader = self._unverified_reader
        assert reader is not None
        xmin, xmax, listed = shown.split(":")
        in_progress = tuple(sorted(int(xid) & 0xFFFFFFFF for xid in listed.split(",") if xid))
        low = (int(xmin) & 0xFFFFFFFF, int(xmax) & 0xFFFFFFFF)
        header = reader.header()
        if header == (*low, len(in_progress)):
            reading = reader()
            if reading == (*low, in_progress):
                self._snapshot_reader, self._unverified_reader = reader, None
                return reading
        elif header is not None and header[0] <= low[0] and header[1] <= low[1]:
            return None  # older, as the statement's snapshot may be: try again later
        self._snapshot_tries += 1
        if self._snapshot_tries >= SNAPSHOT_TRIES:
            self._unverified_reader = None
        return None

    def _changes_counted(self) -> bool:
        """Whether scorekit._changed() counts this connection's changes to the deployments and
        the attachments: installed (older installs had no such trigger) and enabled ALWAYS, so
        that it fires under any session_replication_role."""
        rows = self._query(
            "SELECT count(*) AS n FROM pg_catalog.pg_trigger "
            "WHERE tgname OPERATOR(pg_catalog.=) 'scorekit_changed' "
            "AND tgenabled OPERATOR(pg_catalog.=) 'A' "  # ENABLE ALWAYS, as install makes them
            "AND tgrelid OPERATOR(pg_catalog.=) ANY (ARRAY["
            "'scorekit.deployments'::pg_catalog.regclass::pg_catalog.oid, "
            "'scorekit.attachments'::pg_catalog.regclass::pg_catalog.oid])"
        )
        return bool(rows[0]["n"] == 2)

    def _query(self, sql: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> Any:
        """Run a query through a prepared plan kept for the connection."""
        plan = self._plans.get(sql)
        if plan is None:
            plan = self._plans[sql] = self.plpy.prepare(sql, list(types))
        return self.plpy.execute(plan, list(args))

    def fail(
        self, exc: ScorekitError, table: str | None = None, column: str | None = None
    ) -> NoReturn:
        details = [p.to_dict() for p in exc.details[:20]]
        extra: dict[str, str] = {}
        if table:
            extra["table_name"] = table
        if column:
            extra["column_name"] = column
        self.plpy.error(
            f"scorekit: {exc.message}",
            detail=json.dumps({"code": exc.code, "details": details}, default=str),
            sqlstate=exc.sqlstate,
            **extra,
        )
        raise AssertionError("plpy.error raises")  # pragma: no cover

    # --- models -------------------------------------------------------------------------------
    def resolve(self, ref: str) -> tuple[str, int]:
        """'audit', 'audit@champion' or 'audit@3' -> (name, version) as deployed now."""
        if ref is None:
            raise UsageError("model is NULL; name one: 'audit', 'audit@champion' or 'audit@3'")
        name, selector = parse_ref(ref)
        if selector is not None and selector != CHAMPION:
            if not selector.isdigit():
                raise UsageError(
                    f"model reference {ref!r}: in the database a model is named as name, "
                    f"name@champion or name@<version>, not by the alias {selector!r}"
                )
            return name, int(selector)
        version = self._query("SELECT scorekit.champion($1) AS v", ["text"], [name])[0]["v"]
        if version is None:
            raise self._not_deployed(name)
        return name, int(version)

    def _not_deployed(self, name: str) -> ModelNotFoundError:
        rows = self._query(
            "SELECT string_agg(version::text, ', ' ORDER BY version) AS versions "
            "FROM scorekit.models WHERE name = $1",
            ["text"],
            [name],
        )
        versions = rows[0]["versions"]
        if versions:
            return ModelNotFoundError(
                f"model {name!r} has versions {versions} in this database but no champion; "
                f"promote one: SELECT scorekit.promote('{name}', <version>)"
            )
        names = self._query("SELECT string_agg(DISTINCT name, ', ') AS n FROM scorekit.models")
        return ModelNotFoundError(
            f"no model named {name!r} in this database; published: {names[0]['n'] or 'none'}. "
            f"Publish one with: scorekit db publish {name}"
        )

    def model(self, name: str, version: int, engine: str = "auto") -> Model:
        """The model version, loaded once per connection (and checked against its sha256s)."""
        key = (name, version, engine)
        loaded = self._models.get(key)
        if loaded is not None:
            self._models.move_to_end(key)
            return loaded
        rows = self._query(
            "SELECT manifest::text AS manifest FROM scorekit.models "
            "WHERE name = $1 AND version = $2",
            ["text", "integer"],
            [name, version],
        )
        if not rows:
            versions = self._query(
                "SELECT string_agg(version::text, ', ' ORDER BY version) AS v "
                "FROM scorekit.models WHERE name = $1",
                ["text"],
                [name],
            )[0]["v"]
            if versions is None:
                raise self._not_deployed(name)
            raise ModelNotFoundError(
                f"model {name!r} has no version {version} in this database; versions: {versions}"
            )
        where = f"database table scorekit.models, row {name}@{version}"
        manifest = Manifest.from_json(rows[0]["manifest"].encode(), where)
        if manifest.name != name or manifest.version != str(version):
            raise IntegrityError(
                f"{where} holds the manifest of {manifest.ref}; the row was changed after "
                "publishing. Republish the model."
            )

        def read(artifact: str) -> bytes | None:
            column = {PMML_FILE: "pmml", PICKLE_FILE: "pickle"}[artifact]
            found = self._query(
                f"SELECT {column} AS data FROM scorekit.models WHERE name = $1 AND version = $2",
                ["text", "integer"],
                [name, version],
            )
            if not found or found[0]["data"] is None:
                return None
            data = bytes(found[0]["data"])
            if artifact == PICKLE_FILE:
                self._check_trusted(data, name, version)
            return data

        bundle = Bundle(manifest, read, where)
        loaded = Model(manifest, open_scorer(bundle, engine, order=DB_ENGINES))
        self._models[key] = loaded
        self.loads += 1
        while len(self._models) > MODEL_CACHE_SIZE:
            self._models.popitem(last=False)[1].close()
        return loaded

    def _check_trusted(self, pickle: bytes, name: str, version: int) -> None:
        """Unpickling runs code as the server's OS user: only pickles a superuser trusted."""
        trusted = self._query(
            "SELECT 1 FROM scorekit.trusted_pickles WHERE sha256 = $1",
            ["text"],
            [sha256_hex(pickle)],
        )
        if not trusted:
            raise UnsupportedModelError(
                f"model.pkl of {name}@{version} is not trusted in this database: unpickling "
                "runs code as the server's OS user, so the sklearn engine loads only pickles a "
                f"superuser allowed (scorekit db publish {name}@{version} --trust-pickle, as a "
                "superuser). The native engine scores the PMML without that risk"
            )

    # --- scorekit.predict and scorekit.predict_batch -----------------------------------------
    @_edge
    def predict(self, ref: str, features: str | None) -> str:
        name, version = self.resolve(ref)
        model = self.model(name, version)
        record = _parse_json(features, "features")
        if not isinstance(record, dict):
            raise InputError(
                f"scorekit.predict expects features as a JSON object of field values "
                f"(such as to_jsonb(row)), got a JSON {json_kind(record)}; "
                f"model {model.ref} reads: {', '.join(model.input_fields)}"
            )
        scored = model.predict_one(_by_field(record, model.input_fields))
        return _to_json({**scored, "model": name, "version": version})

    @_edge
    def predict_batch(self, ref: str, records: str | None) -> list[tuple[int, str]]:
        name, version = self.resolve(ref)
        model = self.model(name, version)
        parsed = _parse_json(records, "records")
        if not isinstance(parsed, list):
            raise InputError(
                f"scorekit.predict_batch expects records as a JSON array of objects, got a JSON "
                f"{json_kind(parsed)}; for one record use scorekit.predict"
            )
        names = model.input_fields
        rows = [_by_field(r, names) if isinstance(r, dict) else r for r in parsed]
        try:
            scored = model.predict_records(rows)
        except InputError as exc:  # number the records as the ordinal column does, from 1
            problems = [
                Problem(None if p.row is None else p.row + 1, p.field, p.problem, p.value)
                for p in exc.details
            ]
            raise invalid_input_error(
                problems, model.ref, "Records are numbered by ordinal, from 1."
            ) from exc
        return [
            (i + 1, _to_json({**out, "model": name, "version": version}))
            for i, out in enumerate(scored)
        ]

    # --- attach and detach --------------------------------------------------------------------
    def _table(self, tbl: str | None) -> tuple[str, str]:
        """(oid, schema-qualified quoted name) of a table given as regclass text."""
        if tbl is None:
            raise UsageError("the table is NULL; name one, such as 'public.applications'")
        rows = self._query(
            "SELECT c.oid::text AS oid, c.relkind::text AS kind, c.relname::text AS name, "
            "n.nspname::text AS schema FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.oid = $1::regclass::oid",
            ["text"],
            [tbl],
        )
        row = rows[0]
        qualified = f"{self.plpy.quote_ident(row['schema'])}.{self.plpy.quote_ident(row['name'])}"
        if row["kind"] != "r":
            raise UsageError(f"{qualified} is not an ordinary table; scorekit attaches to tables")
        return row["oid"], qualified

    def _columns(self, oid: str) -> dict[str, Column]:
        rows = self._query(
            "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type, "
            "t.typcategory::text AS category FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            ["text"],
            [oid],
        )
        return {r["name"]: Column(r["name"], r["type"], r["category"]) for r in rows}

    def _primary_key(self, oid: str) -> list[str]:
        rows = self._query(
            "SELECT a.attname::text AS name FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[]) "
            "WHERE i.indrelid = $1::oid AND i.indisprimary "
            "ORDER BY pg_catalog.array_position(i.indkey::int2[], a.attnum)",
            ["text"],
            [oid],
        )
        return [r["name"] for r in rows]

    def _has_parent(self, oid: str) -> bool:
        rows = self._query(
            "SELECT 1 FROM pg_catalog.pg_inherits WHERE inhrelid OPERATOR(pg_catalog.=) $1::oid",
            ["text"],
            [oid],
        )
        return bool(rows)

    def _key_equality(self, table: str) -> list[tuple[str, str]]:
        """For each primary key column, in key order: the type its index compares as and the
        schema of that comparison's = operator, so that the write-back names the very operator
        the index uses (a varchar key compares as text with pg_catalog's =, a citext key with
        citext's), never one found on the caller's search_path."""
        rows = self._query(
            "SELECT pg_catalog.format_type(c.opcintype, NULL) AS cast, "
            "pg_catalog.quote_ident(n.nspname) AS schema "
            "FROM pg_catalog.pg_index i "
            "CROSS JOIN pg_catalog.generate_series(0, i.indnkeyatts - 1) AS k(pos) "
            "JOIN pg_catalog.pg_opclass c ON c.oid = i.indclass[k.pos] "
            "JOIN pg_catalog.pg_amop o ON o.amopfamily = c.opcfamily "
            "AND o.amoplefttype = c.opcintype AND o.amoprighttype = c.opcintype "
            "AND o.amopstrategy = 3 AND o.amopmethod = c.opcmethod "  # btree's equality
            "JOIN pg_catalog.pg_operator op ON op.oid = o.amopopr "
            "JOIN pg_catalog.pg_namespace n ON n.oid = op.oprnamespace "
            "WHERE i.indrelid = $1::regclass::oid AND i.indisprimary ORDER BY k.pos",
            ["text"],
            [table],
        )
        return [(r["cast"], r["schema"]) for r in rows]

    @_edge
    def attach(
        self,
        tbl: str,
        ref: str,
        mode: str,
        outputs: str | None,
        features: str | None,
        version_column: str | None,
        on_error: str,
        engine: str,
    ) -> str:
        oid, table = self._table(tbl)
        if ref is None:
            raise UsageError("model is NULL; name one: 'audit' (follow the champion) or 'audit@3'")
        if mode not in MODES:
            raise UsageError(f"mode {mode!r} is not one of: {', '.join(MODES)}")
        if on_error not in ON_ERROR:
            raise UsageError(f"on_error {on_error!r} is not one of: {', '.join(ON_ERROR)}")
        if engine == "pypmml":
            raise UsageError(
                "engine 'pypmml' would start a JVM inside the database server; use 'native' "
                "(numpy only) or 'sklearn' (the pickle)"
            )
        if engine not in ("auto", *DB_ENGINES):
            raise UsageError(f"engine {engine!r} is not one of: auto, {', '.join(DB_ENGINES)}")
        name, selector = parse_ref(ref)
        pinned = int(selector) if selector and selector.isdigit() else None
        _, version = self.resolve(ref)
        model = self.model(name, version, engine)
        columns = self._columns(oid)
        feature_map = map_features(model, columns, _parse_mapping(features, "features"), table)
        output_map = map_outputs(model, columns, _parse_mapping(outputs, "outputs"), table)
        used = set(feature_map.values())
        clash = [c for c in output_map.values() if c in used]
        if clash:
            raise UsageError(
                f"column(s) {', '.join(clash)} of {table} would be both read as model input "
                "and written with predictions; name other output columns"
            )
        if version_column is not None:
            found = columns.get(version_column)
            if found is None or found.category not in (NUMERIC_CATEGORY, STRING_CATEGORY):
                raise UsageError(
                    f"version_column {version_column!r} must be an integer or text column of "
                    f"{table}; add one: ALTER TABLE {table} ADD COLUMN "
                    f"{self.plpy.quote_ident(version_column)} integer"
                )
        key = self._primary_key(oid)
        if mode == "statement" and self._has_parent(oid):
            raise UsageError(
                f"{table} is a partition or inherits from another table, and PostgreSQL fires "
                "no statement trigger of it for an INSERT or UPDATE made through its parent, so "
                "mode 'statement' would leave those rows unscored; attach with mode 'row'"
            )
        if mode == "statement" and not key:
            raise UsageError(
                f"mode 'statement' writes the scores back by primary key, and {table} has none; "
                f"add one (ALTER TABLE {table} ADD PRIMARY KEY (...)) or attach with mode 'row'"
            )
        odd = [k for k in key if columns[k].category in UNKEYABLE]
        if odd and mode == "statement":
            raise UsageError(
                f"mode 'statement' writes the scores back by primary key, and the key of {table} "
                f"has array or composite column(s) {', '.join(odd)}; attach with mode 'row'"
            )
        if odd:
            key = []  # row mode needs no key; rescore then lets the row trigger rescore
        self._drop_triggers(table)
        quoted = ", ".join(self.plpy.quote_ident(c) for c in feature_map.values())
        if mode == "row":
            self.plpy.execute(
                f"CREATE TRIGGER {ROW_TRIGGER} BEFORE INSERT OR UPDATE OF {quoted} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION scorekit._row_trigger()"
            )
        else:
            # No BEFORE UPDATE row trigger here: PostgreSQL locks each row it updates for one,
            # whatever its columns, and so the write-back UPDATE of every inserted row would pay
            # for it. An AFTER row trigger costs that UPDATE nothing.
            self.plpy.execute(
                f"CREATE TRIGGER {INSERTED_TRIGGER} AFTER INSERT ON {table} "
                f"REFERENCING NEW TABLE AS {TRANSITION_TABLE} "
                "FOR EACH STATEMENT EXECUTE FUNCTION scorekit._inserted_trigger()"
            )
            self.plpy.execute(
                f"CREATE TRIGGER {UPDATED_ROW_TRIGGER} AFTER UPDATE OF {quoted} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION scorekit._updated_row_trigger()"
            )
            self.plpy.execute(
                f"CREATE TRIGGER {UPDATED_TRIGGER} AFTER UPDATE OF {quoted} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION scorekit._updated_trigger()"
            )
        self._query(
            "INSERT INTO scorekit.attachments AS a (tbl, model, pinned_version, mode, engine, "
            "on_error, features, outputs, version_column, key_columns) "
            "VALUES ($1::oid::regclass, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10) "
            "ON CONFLICT (tbl) DO UPDATE SET model = excluded.model, "
            "pinned_version = excluded.pinned_version, mode = excluded.mode, "
            "engine = excluded.engine, on_error = excluded.on_error, "
            "features = excluded.features, outputs = excluded.outputs, "
            "version_column = excluded.version_column, key_columns = excluded.key_columns, "
            "attached_at = now(), attached_by = current_user",
            ["text", "text", "integer", "text", "text", "text", "text", "text", "text", "text[]"],
            [
                oid,
                name,
                pinned,
                mode,
                engine,
                on_error,
                json.dumps(feature_map),
                json.dumps(output_map),
                version_column,
                key,
            ],
        )
        self._tables.pop(oid, None)
        deployed = f"{name}@{version}" if pinned else f"{name}@champion (version {version})"
        written = ", ".join(f"{column} <- {output}" for output, column in output_map.items())
        when = (
            "INSERT and on UPDATE of its feature columns, row by row"
            if mode == "row"
            else "INSERT and on UPDATE of its feature columns, a statement at a time"
        )
        tip = ""
        if mode == "statement" and self._fillfactor(oid) == 100:
            tip = (
                f". The scores are written back by an UPDATE, which costs less where it stays on "
                f"the row's page: ALTER TABLE {table} SET (fillfactor = 50) leaves room for it, "
                "for about twice the pages (docs/in-database.md)"
            )
        return (
            f"{table} is scored by {deployed} with the {model.engine} engine on {when}; "
            f"on_error {on_error}; {written}"
            + (f", {version_column} <- version" if version_column else "")
            + tip
        )

    def _fillfactor(self, oid: str) -> int:
        rows = self._query(
            "SELECT o.option_value AS value FROM pg_catalog.pg_class c, "
            "pg_catalog.pg_options_to_table(c.reloptions) o "
            "WHERE c.oid = $1::pg_catalog.oid AND o.option_name = 'fillfactor'",
            ["text"],
            [oid],
        )
        return int(rows[0]["value"]) if rows else 100

    def _drop_triggers(self, table: str) -> None:
        existing = self._query(
            "SELECT tgname::text AS name FROM pg_trigger WHERE tgrelid = $1::regclass::oid "
            "AND tgname = ANY ($2)",
            ["text", "text[]"],
            [table, list(TRIGGERS)],
        )
        for row in existing:
            self.plpy.execute(f"DROP TRIGGER {row['name']} ON {table}")

    @_edge
    def detach(self, tbl: str) -> str:
        oid, table = self._table(tbl)
        self._drop_triggers(table)
        deleted = self._query(
            "DELETE FROM scorekit.attachments WHERE tbl::oid = $1::oid RETURNING model",
            ["text"],
            [oid],
        )
        self._tables.pop(oid, None)
        if not deleted:
            return f"{table} was not attached; nothing to do"
        return f"{table} is no longer scored by {deleted[0]['model']}; its scores are kept"

    # --- the state of an attached table, once per statement ----------------------------------
    def current(self, oid: str, table: Callable[[], str]) -> TableScoring:
        """The table's scoring state for the running top-level statement: read by its first
        trigger call (or kept from an earlier statement of the transaction, see _unchanged),
        reused by the others (statements nested in it included). A statement is told from the
        next by its start time and its transaction's: statements sent together in one query
        string, or run by one function call, count as one."""
        state = self._tables.get(oid)
        clock = self._statement_clock
        if state is None or clock is None:
            return self.refresh(oid, table)
        statement = clock()
        if state.statement == statement:
            return state
        xact_start = statement[1]
        if (
            state.snapshot is not None
            and state.xact_start == xact_start
            and self._unchanged(state.snapshot, xact_start)
        ):
            state.statement = statement
            state.rows = 0
            return state
        return self.refresh(oid, table)

    def _unchanged(self, snapshot: str | Snapshot, xact_start: int) -> bool:
        """Whether what a statement of this transaction read under ``snapshot`` still holds: no
        other transaction has ended since (a commit changes the server's snapshot: its xid
        leaves the in-progress list, or the snapshot's xmax moves past it), and this connection,
        whose own changes none of its snapshots shows, has changed no deployment or attachment
        in this transaction. Reads the statement's snapshot through ctypes, or, where that is
        unavailable, with a query that reads no table."""
        if self._changed_in_transaction(xact_start):
            return False
        reader = self._snapshot_reader
        if reader is not None:
            if not isinstance(snapshot, tuple):
                return False  # read by the query, before the reader was verified
            return reader.matches(snapshot)
        now = self._query(f"SELECT {_SNAPSHOT} AS snapshot")
        return bool(now[0]["snapshot"] == snapshot)

    def _changed_in_transaction(self, xact_start: int) -> bool:
        """Whether this connection may have changed scorekit's deployments or attachments in the
        transaction that started at ``xact_start``. Records as it answers: changes counted since
        the last look are charged to this transaction (one made in an earlier transaction and
        seen only now costs this transaction its kept states, nothing worse)."""
        assert self._gd is not None
        changes = self._gd.get("scorekit_changes", 0)
        if changes != self._changes_seen:
            self._changes_seen = changes
            self._changed_xact_start = xact_start
        return self._changed_xact_start == xact_start

    def refresh(self, oid: str, table: Callable[[], str], force: bool = False) -> TableScoring:
        """Read which attachment and deployed version hold now (one small query) and return the
        table's scoring state, rebuilt if either changed; unless ``force``, a state already
        serving this statement is kept, so that one statement never mixes versions. ``table``
        gives the table's name for messages."""
        clock = self._statement_clock
        # the statement's snapshot, as _unchanged reads it later (the query's own is no older)
        snapshot = self._snapshot_reader() if self._snapshot_reader is not None else None
        self.reads += 1
        rows = self._query(
            # xmin changes with every change of the attachment's row, however it was made.
            "SELECT a.xmin::text AS token, "
            + (f"{_SNAPSHOT} AS snapshot, " if self._snapshot_reader is None else "")
            # The champion inline: a call to scorekit.champion() would be planned anew in each
            # statement, which costs more than the rest of the trigger for a one-row INSERT.
            + "coalesce(a.pinned_version, (SELECT d.version FROM scorekit.deployments d "
            "WHERE d.model = a.model ORDER BY d.id DESC LIMIT 1)) AS version, "
            # the statement's key where statement_clock() is unavailable (as text, two
            # timestamps cost a few µs: only then)
            + (
                "NULL AS statement "
                if clock is not None
                else "statement_timestamp()::text || ' ' || transaction_timestamp()::text "
                "AS statement "
            )
            + "FROM scorekit.attachments a WHERE a.tbl::oid = $1::oid",
            ["text"],
            [oid],
        )
        if not rows:
            raise UsageError(
                f"{table()} is not attached to a model; attach it with "
                f"SELECT scorekit.attach('{table()}', '<model>') (or scorekit db attach)"
            )
        row = rows[0]
        statement = row["statement"] if clock is None else clock()
        state = self._tables.get(oid)
        if not force and state is not None and state.statement == statement:
            return state  # a later call in the same statement (without the clock)
        version = row["version"]
        if state is None or state.token != row["token"] or state.version != version:
            state = self._build_state(oid, table(), version)
            self._tables[oid] = state
        state.statement = statement
        state.rows = 0
        # Later statements of this transaction may keep this state while the snapshot stays the
        # same, unless the transaction changed (and may yet roll back) a deployment or
        # attachment. A new transaction always reads: this connection's own transactions show
        # in none of its snapshots, so the snapshot can be the same after its own commit or
        # rollback.
        reusable = clock is not None and self._gd is not None
        state.xact_start = statement[1] if reusable else None
        if self._snapshot_reader is None:
            snapshot = row["snapshot"]
            if self._unverified_reader is not None:
                snapshot = self._verify_snapshot(snapshot) or snapshot
        state.snapshot = (
            snapshot if reusable and not self._changed_in_transaction(statement[1]) else None
        )
        return state

    def _build_state(self, oid: str, table: str, version: int | None) -> TableScoring:
        rows = self._query(
            "SELECT a.model, a.engine, a.on_error, a.features::text AS features, "
            "a.outputs::text AS outputs, a.version_column, a.key_columns, a.xmin::text AS token "
            "FROM scorekit.attachments a WHERE a.tbl::oid = $1::oid",
            ["text"],
            [oid],
        )
        row = rows[0]
        if version is None:
            raise self._not_deployed(row["model"])
        model = self.model(row["model"], version, row["engine"])
        columns = self._columns(oid)
        mapping = json.loads(row["features"])
        if any(name not in mapping for name in model.input_fields):
            # A version that reads fields the one attached did not: map them as attach would.
            given = {k: v for k, v in mapping.items() if k in model.input_fields}
            mapping = map_features(model, columns, given, table)
        return TableScoring(
            table=table,
            model=model,
            version=version,
            # jsonb keeps keys in its own order; prepare_one reads them in the model's
            features=[(name, mapping[name]) for name in model.input_fields],
            outputs=list(json.loads(row["outputs"]).items()),
            version_column=row["version_column"],
            on_error=row["on_error"],
            key_columns=list(row["key_columns"] or []),
            token=row["token"],
            types=columns,
        )

    def _table_name(self, td: Mapping[str, Any]) -> str:
        quote = self.plpy.quote_ident
        return f"{quote(td['table_schema'])}.{quote(td['table_name'])}"

    # --- triggers -----------------------------------------------------------------------------
    @_edge
    def statement_begins(self, td: Mapping[str, Any]) -> None:
        """What the BEFORE ... FOR EACH STATEMENT trigger of tables attached by an install
        before API 2 calls, until scorekit db install drops it: nothing to do any more."""

    @_edge
    def score_row(self, td: dict[str, Any]) -> str:
        """BEFORE INSERT OR UPDATE, per row: the row's scores into its own columns.

        TD["new"] is replaced by a dict of the score columns alone: PL/Python writes back only
        the columns the dict names, each through its text form, so the row's other columns are
        not converted back from Python (PL/Python still converts them to Python for TD)."""
        state = self.current(td["relid"], lambda: self._table_name(td))
        new = td["new"]
        state.rows += 1
        scores: dict[str, Any] = {}
        td["new"] = scores
        # The common case with the fewest steps: the engine's one-record form, read from the row.
        one = state.score_record(new) if state.score_record is not None else None
        if one is not None:
            prediction, probabilities = one
            for column, index in state.writes:
                value = prediction if index < 0 else probabilities[index]  # type: ignore[index]
                scores[column] = None if value != value else value  # a missing score is NULL
            if state.version_column:
                scores[state.version_column] = state.version
            return "MODIFY"
        record = {field_name: new[column] for field_name, column in state.features}
        try:
            scored = state.model.predict_one(record)
        except InputError as exc:
            # keys as text, as the statement mode reads them
            keys = [[str(new[k]) for k in state.key_columns]] if state.key_columns else None
            self._unscorable(state, td["event"], [(state.rows - 1, record, exc)], keys)
            scored = {}
            version = None
        else:
            version = state.version
        for output, column in state.outputs:
            value = scored.get(output)
            scores[column] = None if value != value else value  # a missing prediction is NULL
        if state.version_column:
            scores[state.version_column] = version
        return "MODIFY"

    @_edge
    def score_inserted(self, td: Mapping[str, Any]) -> None:
        state = self.current(td["relid"], lambda: self._table_name(td))
        self._score_rows(state, TRANSITION_TABLE, "", [], "INSERT")

    @_edge
    def note_updated(self, td: Mapping[str, Any]) -> None:
        """AFTER UPDATE OF the feature columns, per row, in mode 'statement': note the row's key
        for score_updated, which the same UPDATE fires once its rows are all written."""
        oid = td["relid"]
        state = self.current(oid, lambda: self._table_name(td))
        noted = self._updated.get(oid)
        if noted is None or noted[0] != state.statement:
            # Keys left by an UPDATE that failed before its statement trigger are dropped. Within
            # one top-level statement (a DO block or function whose UPDATE failed in a
            # subtransaction) they stay, and the next UPDATE's statement trigger scores their
            # rows too: read again from the table, they get the scores of their current values.
            noted = self._updated[oid] = (state.statement, [])
        new = td["new"]
        noted[1].append([_key_text(new[k]) for k in state.key_columns])

    @_edge
    def score_updated(self, td: Mapping[str, Any]) -> None:
        """AFTER UPDATE OF the feature columns, per statement, in mode 'statement': score the rows
        it updated (as note_updated noted them), read again from the table, and write their
        scores back as the INSERT's are."""
        oid = td["relid"]
        noted = self._updated.pop(oid, None)
        if noted is None:
            return
        state = self.current(oid, lambda: self._table_name(td))
        if noted[0] != state.statement:
            return  # noted by an UPDATE that failed; this one updated no row
        names = ", ".join(f"k{i}" for i in range(len(state.key_columns)))
        unnest = ", ".join(_key_arrays(state))
        matches = self._key_matches(state, state.table, "u")
        where = f"WHERE EXISTS (SELECT FROM ROWS FROM ({unnest}) AS u({names}) WHERE {matches})"
        keys = [array_literal(list(column)) for column in zip(*noted[1], strict=True)]
        self._score_rows(
            state,
            state.table,
            where,
            keys,
            ACTION_UPDATED,
            refused_read="scores an UPDATE of its features by reading the rows again",
        )

    @_edge
    def rescore(self, tbl: str | None, stale_only: bool | None, batch_size: int | None) -> int:
        if batch_size is None or batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        oid, table = self._table(tbl)
        state = self.refresh(oid, lambda: table, force=True)  # the version deployed now
        where = ""
        args: list[Any] = []
        if stale_only:
            if not state.version_column:
                raise UsageError(
                    f"stale_only needs a version column, and {table} was attached without one; "
                    "rescore every row (stale_only => false) or attach with version_column"
                )
            where = f"WHERE {self.plpy.quote_ident(state.version_column)}::text IS DISTINCT FROM $1"
            args = [str(state.version)]
        types = ["text"] * len(args)
        if not state.key_columns:
            # No key to write scores back by: let the row trigger score each row as it updates.
            column = self.plpy.quote_ident(state.features[0][1])
            sql = f"UPDATE {table} SET {column} = {column} {where}"
            return int(self.plpy.execute(self.plpy.prepare(sql, types), args).nrows())
        # Lock the rows first, so that no concurrent update of a row's features can land between
        # reading them here and writing their scores back (its new features would keep old
        # scores); the read below then sees every committed update.
        self.plpy.execute(
            self.plpy.prepare(
                f"SELECT count(*) FROM (SELECT 1 FROM {table} {where} FOR UPDATE) locked", types
            ),
            args,
        )
        return self._score_rows(state, table, where, args, "rescore", batch_size)

    # --- scoring many rows at once ------------------------------------------------------------
    def _score_rows(
        self,
        state: TableScoring,
        source: str,
        where: str,
        args: list[Any],
        action: str,
        chunk_rows: int = CHUNK_ROWS,
        refused_read: str | None = None,
    ) -> int:
        """Score the rows of ``source`` in chunks of one vectorised call each (or, where they
        are at most RECORD_ROWS in all, a record at a time), and write the scores back by
        primary key. Returns the number of rows written."""
        quote = self.plpy.quote_ident
        # Keys travel as text and back (every type round-trips through its text form).
        selected = [f"{quote(k)}::text" for k in state.key_columns]
        for field_name, column in state.features:
            found = state.types[column]
            if state.model.manifest.schema[field_name].is_continuous and is_number(found):
                if found.type.startswith("numeric"):
                    # numeric may exceed float8's range: as text it is parsed, or refused, like
                    # text ('' is a missing value, so the whole column parses at once)
                    selected.append(f"coalesce({quote(column)}::text, '')")
                else:
                    selected.append(f"{quote(column)}::float8")
            else:
                selected.append(quote(column))
        aggregates = ", ".join(f"pg_catalog.array_agg(c{i}) AS c{i}" for i in range(len(selected)))
        inner = ", ".join(f"{s} AS c{i}" for i, s in enumerate(selected))
        sql = (
            f"SELECT {aggregates} FROM (SELECT {inner}, "
            f"(row_number() OVER () - 1) / {int(chunk_rows)} AS chunk FROM {source} {where}) s "
            "GROUP BY chunk ORDER BY chunk"
        )
        plan = state.read_plans.get(sql)
        if plan is None:  # planning it costs a one-row statement more than the rest
            plan = state.read_plans[sql] = self.plpy.prepare(sql, ["text"] * len(args))
        n_keys = len(state.key_columns)
        written = 0
        try:
            cursor = self.plpy.cursor(plan, args)
        except self.plpy.SPIError as exc:
            if refused_read is None:
                raise
            self._refused(state, refused_read, exc)
        try:
            for chunk in _fetch(cursor):
                lists = [chunk[f"c{i}"] for i in range(len(selected))]
                keys, values = lists[:n_keys], lists[n_keys:]
                columns = {f: values[j] for j, (f, _) in enumerate(state.features)}
                # the whole statement in one small chunk: a record at a time (never one chunk of
                # many, whose rows would then not all be scored alike)
                alone = written == 0 and len(lists[0]) < chunk_rows
                scored, one_minus = self._score_chunk(state, columns, keys, written, action, alone)
                self._write_back(state, keys, scored, one_minus)
                written += len(keys[0]) if keys else 0
        finally:
            cursor.close()  # else an exception's traceback may keep the portal open
        return written

    def _score_chunk(
        self,
        state: TableScoring,
        columns: dict[str, list[Any]],
        keys: list[list[Any]],
        offset: int,
        action: str,
        alone: bool = False,
    ) -> tuple[dict[str, list[Any]], tuple[str, str] | None]:
        """The chunk's scores by output column (and "_version"), and _one_minus of them.
        ``alone``: the chunk holds all the rows being scored."""
        model = state.model
        n = len(next(iter(columns.values()))) if columns else 0
        if alone and n <= RECORD_ROWS:
            by_record = self._score_records(state, columns, n)
            if by_record is not None:
                return by_record, None
        try:
            scored = model.predict_columns(columns, row_offset=offset)
            out = {name: values.tolist() for name, values in scored.items()}
            out["_version"] = [state.version] * n
            return out, _one_minus(scored)
        except InputError as exc:
            if state.on_error == "raise":
                rows = sorted({p.row for p in exc.details if p.row is not None})
                first = rows[0] if rows else offset
                of_first = InputError(exc.message, [p for p in exc.details if p.row == first])
                self._unscorable(
                    state,
                    action,
                    [(first, {f: columns[f][first - offset] for f in columns}, of_first)],
                    [[k[first - offset] for k in keys]],
                    total=len(rows),
                )
        # on_error => 'null': score row by row; the rows that fail keep NULL scores.
        out = {name: [None] * n for name in model.output_columns}
        out["_version"] = [None] * n
        failed: list[tuple[int, dict[str, Any], InputError]] = []
        failed_keys: list[list[Any]] = []
        for i in range(n):
            record = {f: columns[f][i] for f in columns}
            try:
                one = model.predict_one(record)
            except InputError as row_error:
                failed.append((offset + i, record, row_error))
                failed_keys.append([k[i] for k in keys])
                continue
            for name, value in one.items():
                out[name][i] = value
            out["_version"][i] = state.version
        self._unscorable(state, action, failed, failed_keys)
        return out, None

    def _score_records(
        self, state: TableScoring, columns: dict[str, list[Any]], n: int
    ) -> dict[str, list[Any]] | None:
        """What _score_chunk returns for a few rows, by the engine's one-record form (see
        score_row); None where it has none, or a row needs the vectorised call's handling (a
        value it can't score, which that call then names)."""
        score = state.score_record
        if score is None:
            return None
        produced = state.model.output_columns
        out: dict[str, list[Any]] = {name: [] for name in produced}
        for i in range(n):
            row = {column: columns[field_name][i] for field_name, column in state.features}
            try:
                one = score(row)
            except InputError:
                return None
            if one is None:
                return None
            prediction, probabilities = one
            out[produced[0]].append(prediction)
            for name, value in zip(produced[1:], probabilities or (), strict=True):
                out[name].append(value)
        out["_version"] = [state.version] * n
        return out

    def _write_back(
        self,
        state: TableScoring,
        keys: list[list[Any]],
        scored: dict[str, list[Any]],
        one_minus: tuple[str, str] | None = None,
    ) -> None:
        targets = [(output, column) for output, column in state.outputs]
        if state.version_column:
            targets.append(("_version", state.version_column))
        # A binary classifier's probability that is exactly 1 - the other, in float64, with both
        # written to double precision columns, is not sent: the UPDATE computes it with the same
        # IEEE subtraction. Formatting floats as text is the dearest part of the literals.
        computed: tuple[int, int] | None = None  # (target computed, target it is computed from)
        at = {output: j for j, (output, _) in enumerate(targets)}
        if one_minus is not None and all(
            o in at and state.types[targets[at[o]][1]].type == _FLOAT8 for o in one_minus
        ):
            computed = (at[one_minus[0]], at[one_minus[1]])
        sent = [j for j in range(len(targets)) if computed is None or j != computed[0]]
        equality = self._key_comparison(state)
        # Where the chunk's keys are every integer from the lowest to the highest, the rows to
        # update are exactly those of that key range, whatever else the table holds (the key is
        # unique): one index range scan finds them, and each row's scores are its key's place in
        # the arrays, with no join. Rows inserted with an identity or serial key come so.
        span = None
        if len(equality) == 1 and equality[0] in _INTEGER_KEYS:
            span = _key_span(keys[0])
        plan_key = (targets[computed[0]][0] if computed else None, span is not None)
        plan = state.write_plans.get(plan_key)
        if plan is None:
            sql, types = self._write_back_sql(state, targets, sent, computed, span is not None)
            plan = state.write_plans[plan_key] = self.plpy.prepare(sql, types)
        values = [scored[targets[j][0]] for j in sent]
        if span is None:
            arguments: list[Any] = [*map(array_literal, [*keys, *values])]
        else:
            low, order = span
            if order is not None:
                values = [[column[i] for i in order] for column in values]
            arguments = [low, low + len(keys[0]) - 1, *map(array_literal, values)]
        try:
            self.plpy.execute(plan, arguments)
        except self.plpy.SPIError as exc:
            self._refused(state, "writes the scores back with an UPDATE by primary key", exc)

    def _refused(self, state: TableScoring, doing: str, exc: Exception) -> NoReturn:
        """Re-raise ``exc``, as what to grant where it says a privilege is missing (42501): the
        statement mode reads and updates the table beyond what the statement itself does."""
        if getattr(exc, "sqlstate", None) != "42501":
            raise exc
        raise UsageError(
            f"{state.table} is attached in mode 'statement', which {doing}, and this role may not "
            f"({exc}); GRANT SELECT, UPDATE ON {state.table} to the roles that insert or update "
            "its rows, or attach in mode 'row'"
        ) from None

    def _key_matches(self, state: TableScoring, table: str, keys: str) -> str:
        """SQL: the primary key of ``table`` equals the row of ``keys`` (k0, k1, ...), each column
        with the = operator its index compares with (see _key_equality)."""
        quote = self.plpy.quote_ident
        return " AND ".join(
            f"{table}.{quote(k)}::{cast} OPERATOR({schema}.=) {keys}.k{i}::{cast}"
            for i, (k, (cast, schema)) in enumerate(
                zip(state.key_columns, self._key_comparison(state), strict=True)
            )
        )

    def _key_comparison(self, state: TableScoring) -> list[tuple[str, str]]:
        """_key_equality of the state's table, read once per state."""
        if state.key_equality is None:
            state.key_equality = self._key_equality(state.table)
        return state.key_equality

    def _write_back_sql(
        self,
        state: TableScoring,
        targets: list[tuple[str, str]],
        sent: list[int],
        computed: tuple[int, int] | None,
        key_range: bool,
    ) -> tuple[str, list[str]]:
        """The write-back UPDATE and its parameters' types. Scores come as one array per sent
        target (v<j>); the rows are found by key (k<i>, arrays beside them) or, with
        ``key_range``, as the integer key range $1 to $2, each row's scores at its key's place.
        """
        quote = self.plpy.quote_ident
        # Arrays go in as text literals that PostgreSQL parses in C: PL/Python would convert a
        # list element by element through str() and the type's input function.
        first = 3 if key_range else len(state.key_columns) + 1
        arrays = [
            f"${first + i}::text::{state.types[targets[j][1]].type}[]" for i, j in enumerate(sent)
        ]
        if key_range:
            key = f"t.{quote(state.key_columns[0])}"
            place = (
                f"[({key} OPERATOR(pg_catalog.-) $1::pg_catalog.int8)::pg_catalog.int4 "
                "OPERATOR(pg_catalog.+) 1]"
            )
        else:
            place = ""
        sets = [f"{quote(targets[j][1])} = s.v{j}{place}" for j in sent]
        if computed:
            sets.append(
                f"{quote(targets[computed[0]][1])} = "
                f"1::{_FLOAT8} OPERATOR(pg_catalog.-) s.v{computed[1]}{place}"
            )
        if key_range:
            # OFFSET 0 keeps the arrays a subquery, parsed once rather than for every row
            values = ", ".join(f"{a} AS v{j}" for a, j in zip(arrays, sent, strict=True))
            sql = (
                f"UPDATE {state.table} AS t SET {', '.join(sets)} "
                f"FROM (SELECT {values} OFFSET 0) AS s "
                f"WHERE {key} OPERATOR(pg_catalog.>=) $1::pg_catalog.int8 "
                f"AND {key} OPERATOR(pg_catalog.<=) $2::pg_catalog.int8"
            )
            return sql, ["int8", "int8"] + ["text"] * len(sent)
        keys = _key_arrays(state)
        names = [f"k{i}" for i in range(len(state.key_columns))] + [f"v{j}" for j in sent]
        sql = (
            f"UPDATE {state.table} AS t SET {', '.join(sets)} "
            f"FROM ROWS FROM ({', '.join(keys + [f'pg_catalog.unnest({a})' for a in arrays])}) "
            f"AS s({', '.join(names)}) WHERE {self._key_matches(state, 't', 's')}"
        )
        return sql, ["text"] * (len(state.key_columns) + len(sent))

    # --- rows that can't be scored ------------------------------------------------------------
    def _unscorable(
        self,
        state: TableScoring,
        action: str,
        failures: list[tuple[int, dict[str, Any], InputError]],
        keys: list[list[Any]] | None,
        total: int | None = None,
    ) -> None:
        """on_error 'raise': fail the statement, naming the row, column, value and model.
        on_error 'null': record each failure in scorekit.errors (its row keeps NULL scores)."""
        if not failures:
            return
        messages = [
            self._row_message(state, action, row, exc, keys, i)
            for i, (row, _, exc) in enumerate(failures)
        ]
        if state.on_error == "raise":
            row, _, exc = failures[0]
            more = f" ({total - 1} more row(s) also fail)" if total and total > 1 else ""
            first = exc.details[0] if exc.details else None
            raise_as = InputError(
                f"{messages[0]}{more}. Nothing of the statement was written. Fix the value, or "
                "attach with on_error => 'null' to keep such rows with NULL scores",
                [
                    Problem(row + 1, state.column_of(p.field) or p.field, p.problem, p.value)
                    for p in exc.details
                ],
            )
            self.fail(raise_as, state.table, state.column_of(first.field) if first else None)
        key_names = state.key_columns
        self._query(
            "INSERT INTO scorekit.errors (tbl, model, version, row_key, row_data, problems, "
            "message) SELECT $1, $2, $3, k::jsonb, d::jsonb, p::jsonb, m "
            "FROM ROWS FROM (pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::text[]), "
            "pg_catalog.unnest($6::text[]), pg_catalog.unnest($7::text[])) AS u(k, d, p, m)",
            ["text", "text", "integer", "text[]", "text[]", "text[]", "text[]"],
            [
                state.table,
                state.model.name,
                state.version,
                [
                    _to_json(dict(zip(key_names, k, strict=True))) if keys else None
                    for k in (keys or [[]] * len(failures))
                ],
                [
                    _to_json({state.column_of(f) or f: v for f, v in rec.items()})
                    for _, rec, _ in failures
                ],
                [_to_json([p.to_dict() for p in exc.details]) for _, _, exc in failures],
                messages,
            ],
        )

    def _row_message(
        self,
        state: TableScoring,
        action: str,
        row: int,
        exc: InputError,
        keys: list[list[Any]] | None,
        index: int,
    ) -> str:
        key = ""
        if keys and state.key_columns:
            key = (
                " ("
                + ", ".join(f"{k}={v}" for k, v in zip(state.key_columns, keys[index], strict=True))
                + ")"
            )
        problems = (
            "; ".join(
                f"column {state.column_of(p.field) or p.field} (model field {p.field}): {p.problem}"
                for p in exc.details[:MESSAGE_PROBLEMS]
            )
            or exc.message
        )
        where = f"row {row + 1}{key} of this {action} on {state.table}"
        if action == "rescore":
            where = f"row{key} of {state.table}"
        elif action == ACTION_UPDATED:  # read again after the UPDATE: their order is not its
            where = f"row{key} updated by this UPDATE on {state.table}"
        return f"model {state.model.ref} can't score {where}: {problems}"


# --- helpers -------------------------------------------------------------------------------------
_INTEGERS = re.compile(r"-?[0-9]+(?:,-?[0-9]+)*")
_FLOAT8 = "double precision"
# a primary key index's comparison (see Runtime._key_equality) over which keys form ranges
_INTEGER_KEYS = [(cast, "pg_catalog") for cast in ("smallint", "integer", "bigint")]


def _key_arrays(state: TableScoring) -> list[str]:
    """SQL: each primary key column's values, from the text array literal in $1, $2, ..."""
    return [
        f"pg_catalog.unnest(${i + 1}::text::{state.types[k].type}[])"
        for i, k in enumerate(state.key_columns)
    ]


def _key_text(value: Any) -> str:
    """A key column's value, as PL/Python hands it to a trigger, in a text form its type reads
    back (PL/Python hands the types it does not convert as their text form)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


def _key_span(keys: Sequence[Any]) -> tuple[int, list[int] | None] | None:
    """For the keys of one integer column, in their text form, when they are every integer from
    the lowest to the highest once each: (the lowest key, ``order``), where ``order`` is None if
    the keys already ascend one by one, else the rows' positions sorted by their keys (row
    ``order[p]`` has key lowest + p). None when they are not such a run."""
    if not keys:
        return None
    try:
        numbers = [*map(int, keys)]
    except (TypeError, ValueError):
        return None
    if numbers == [*range(numbers[0], numbers[0] + len(numbers))]:
        return numbers[0], None
    order = sorted(range(len(numbers)), key=numbers.__getitem__)
    low = numbers[order[0]]
    if [numbers[i] for i in order] != [*range(low, low + len(numbers))]:
        return None
    return low, order


# What a kept table state is checked against where no SnapshotReader is verified, and what a
# reader is verified against.
_SNAPSHOT = "pg_catalog.pg_current_snapshot()::text"


def _one_minus(scores: Mapping[str, Any]) -> tuple[str, str] | None:
    """(a, b) when a binary classifier's probability a is exactly 1 - its probability b, in
    float64, on every row of ``scores``; None otherwise (NaN included)."""
    import numpy as np

    probabilities = [name for name in scores if name != PREDICTION]
    if len(probabilities) != 2:
        return None
    a, b = probabilities
    if np.array_equal(scores[a], 1.0 - scores[b]):
        return a, b
    if np.array_equal(scores[b], 1.0 - scores[a]):
        return b, a
    return None


def statement_clock() -> Callable[[], tuple[int, int]] | None:
    """The server's own GetCurrentStatementStartTimestamp and
    GetCurrentTransactionStartTimestamp, called through ctypes: the start of the running
    top-level statement and of its transaction (what statement_timestamp() and
    transaction_timestamp() return) in microseconds, without a query. A trigger tells a new
    statement from the next row of the same one by them; the transaction's start tells apart the
    transactions a procedure runs with COMMIT, whose statements share the CALL's start.

    PL/Python offers no other way to tell: asking with a query costs 20 to 40 µs per statement,
    as much as scoring the row. Both functions are part of the server's API for extensions
    (utils/xact.h). None where they can't be found, as outside a PostgreSQL backend; the caller
    then asks with a query on every call."""
    try:
        import ctypes

        server = ctypes.CDLL(None)
        statement = server.GetCurrentStatementStartTimestamp
        transaction = server.GetCurrentTransactionStartTimestamp
    except Exception:  # not in a PostgreSQL backend, or no dlopen(NULL) on this platform
        return None
    for function in (statement, transaction):
        function.argtypes = []
        function.restype = ctypes.c_int64

    def clock() -> tuple[int, int]:
        return statement(), transaction()

    return clock


def snapshot_reader(server_version: int) -> SnapshotReader | None:
    """A SnapshotReader of this server; None where GetActiveSnapshot can't be found (not in a
    PostgreSQL backend, or no dlopen(NULL) on this platform) or the server's version is not one
    whose snapshot struct it knows."""
    if server_version not in SNAPSHOT_LAYOUT_VERSIONS:
        return None
    try:
        import ctypes

        server = ctypes.CDLL(None)
        functions = server.ActiveSnapshotSet, server.GetActiveSnapshot
    except Exception:
        return None
    return SnapshotReader(*functions)


class SnapshotReader:
    """The server's GetActiveSnapshot, called through ctypes: the running statement's snapshot
    as a Snapshot, what pg_current_snapshot() shows (except where a prepared transaction
    briefly leaves an xid twice in the list, which pg_current_snapshot() shows once), without
    the query, which costs 8 to 29 µs of server CPU per statement (docs/benchmarks.md).

    What it reads is the leading fields of SnapshotData (utils/snapshot.h), laid out alike in
    PostgreSQL 12 to 18. Following a pointer of another layout could crash the backend, so
    Runtime uses it only on those versions, and only after ``header()``, which reads the
    struct's scalars and follows no pointer, and then the whole reading have agreed with
    pg_current_snapshot() (Runtime._verify_snapshot)."""

    MAX_IN_PROGRESS = 1 << 20  # more xids than any server runs at once: not a snapshot's count

    def __init__(self, is_set: Any, get_active: Any) -> None:
        import ctypes

        class SnapshotData(ctypes.Structure):
            _fields_ = [  # utils/snapshot.h, PostgreSQL 12 to 18
                ("snapshot_type", ctypes.c_int),  # SnapshotType; SNAPSHOT_MVCC is 0
                ("xmin", ctypes.c_uint32),  # TransactionId
                ("xmax", ctypes.c_uint32),
                ("xip", ctypes.POINTER(ctypes.c_uint32)),  # the in-progress xids
                ("xcnt", ctypes.c_uint32),
                ("subxip", ctypes.POINTER(ctypes.c_uint32)),
                ("subxcnt", ctypes.c_int32),
                ("suboverflowed", ctypes.c_bool),
                ("taken_during_recovery", ctypes.c_bool),
            ]

        is_set.argtypes = []
        is_set.restype = ctypes.c_bool
        get_active.argtypes = []
        get_active.restype = ctypes.POINTER(SnapshotData)
        self._is_set = is_set
        self._get_active = get_active

    def _active(self) -> Any:
        """The active snapshot's struct; None where no snapshot is active (GetActiveSnapshot
        itself would then crash, so ActiveSnapshotSet asks first), or it is not an MVCC
        snapshot, or it was taken during recovery (the caller then reads the state again)."""
        if not self._is_set():
            return None
        snapshot = self._get_active().contents
        if snapshot.snapshot_type != 0 or snapshot.taken_during_recovery:
            return None
        if snapshot.xcnt > self.MAX_IN_PROGRESS:
            return None
        return snapshot

    def header(self) -> tuple[int, int, int] | None:
        """(xmin, xmax, the number of in-progress xids), following no pointer."""
        snapshot = self._active()
        return None if snapshot is None else (snapshot.xmin, snapshot.xmax, snapshot.xcnt)

    def matches(self, snapshot: Snapshot) -> bool:
        """Whether the active snapshot is ``snapshot``: the scalars first, so that a busy
        server's list of xids need not be copied to differ (one reading of the struct)."""
        active = self._active()
        if active is None:
            return False
        xmin, xmax, in_progress = snapshot
        count = len(in_progress)
        if active.xmin != xmin or active.xmax != xmax or active.xcnt != count:
            return False
        return _in_progress(active) == in_progress

    def __call__(self) -> Snapshot | None:
        snapshot = self._active()
        if snapshot is None:
            return None
        return snapshot.xmin, snapshot.xmax, _in_progress(snapshot)


def _in_progress(snapshot: Any) -> tuple[int, ...]:
    """A SnapshotData's in-progress xids, sorted (the list is not read when it is empty)."""
    count = snapshot.xcnt
    return tuple(sorted(snapshot.xip[:count])) if count else ()


def array_literal(values: Sequence[Any]) -> str:
    """A PostgreSQL array literal of ``values``: NULL for None and NaN, numbers as Python
    writes them (repr round-trips a float exactly), anything else double-quoted."""
    kinds = set(map(type, values))
    if kinds == {float} and all(v == v for v in values):
        return "{" + ",".join(map(repr, values)) + "}"
    if kinds == {int}:  # not bool, whose str is True/False
        if type(values) is list:  # str() of a list writes ints fastest, as "1, 2, 3"
            return "{" + str(values)[1:-1] + "}"
        return "{" + ",".join(map(str, values)) + "}"
    if kinds == {str}:  # integer keys, read as text: no element needs quotes
        joined = ",".join(values)
        # every comma a separator (no element holds one), every element an integer
        if joined.count(",") == len(values) - 1 and _INTEGERS.fullmatch(joined):
            return "{" + joined + "}"
    parts = []
    for v in values:
        if v is None or (isinstance(v, float) and v != v):
            parts.append("NULL")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            parts.append(repr(v) if isinstance(v, float) else str(int(v)))
        else:
            text = str(v).replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'"{text}"')
    return "{" + ",".join(parts) + "}"


def _fetch(cursor: Any) -> Iterator[Mapping[str, Any]]:
    while True:
        rows = cursor.fetch(1)
        if not rows:
            return
        yield rows[0]


def _parse_json(text: str | None, what: str) -> Any:
    if text is None:
        raise InputError(f"{what} is NULL; pass a JSON value")
    return json.loads(text)  # jsonb arrives as valid JSON text


def _to_json(value: Any) -> str:
    if isinstance(value, dict):
        value = {k: finite_or_none(v) for k, v in value.items()}
    return json.dumps(value, default=str)


def _by_field(record: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The record keyed by the model's field names: exact keys first, else the one key that
    matches ignoring case (to_jsonb of a row has PostgreSQL's lower-case column names)."""
    if all(name in record for name in names):
        return record
    folded: dict[str, list[str]] = {}
    for key in record:
        folded.setdefault(key.lower(), []).append(key)
    out = dict(record)
    for name in names:
        if name not in record:
            matches = folded.get(name.lower(), [])
            if len(matches) == 1:
                out[name] = record[matches[0]]
    return out


def _parse_mapping(text: str | None, what: str) -> dict[str, str]:
    if text is None:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise UsageError(
            f"{what} must be a JSON object of names to column names, such as "
            '\'{"prediction": "risk_label"}\''
        )
    return value
