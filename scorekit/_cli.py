"""The scorekit command line. Errors print one clear line and exit with the error's exit_code:
0 success, 1 internal failure, 2 usage, 3 bad input data, 4 model problem, 5 store unreachable,
6 another batch run holds the lock, 7 a batch run finished but some rows could not be scored."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._batch import DEFAULT_MAX_ERROR_RATE
from ._config import database_url
from ._csvio import DEFAULT_CHUNK_SIZE
from ._errors import ScorekitError, UsageError
from ._loading import parse_ref
from ._scorer import ENGINES
from ._store import CHAMPION, champion_stack, open_store
from ._training import ALGORITHMS

log = logging.getLogger("scorekit")


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        help="model store: a directory or s3://bucket/prefix (default: $SCOREKIT_STORE or pmml/)",
    )


def _bench_parser(kinds: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A benchmark's parser with the options every benchmark takes."""
    parser: argparse.ArgumentParser = kinds.add_parser(name, help=help_text)
    parser.add_argument("--data", default="data/audit.csv", help="training rows (and inputs)")
    parser.add_argument("--target", default="Adjusted", help="the column to predict")
    parser.add_argument("--output", default="docs/benchmarks.md", help="where the table goes")
    return parser


def _add_promote(parser: argparse.ArgumentParser, help_text: str) -> None:
    """--promote / --no-promote, default None (the first version of a model becomes champion)."""
    promote = parser.add_mutually_exclusive_group()
    promote.add_argument(
        "--promote", dest="promote", action="store_true", default=None, help=help_text
    )
    promote.add_argument("--no-promote", dest="promote", action="store_false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scorekit", description=__doc__.split(".")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train, export (PMML + pickle) and publish a model")
    train.add_argument("--data", required=True, help="training CSV with a header line")
    train.add_argument("--target", required=True, help="the column to predict")
    train.add_argument("--name", required=True, help="model name in the store")
    train.add_argument("--algorithm", default="logreg", choices=list(ALGORITHMS))
    train.add_argument(
        "--task",
        choices=["classification", "regression"],
        help="default: classification for text or few integer labels",
    )
    train.add_argument(
        "--categorical",
        nargs="+",
        default=[],
        metavar="COL",
        help="numeric columns to treat as categories (codes)",
    )
    train.add_argument(
        "--invalid",
        default="error",
        choices=["error", "missing"],
        help="bad or unseen values at scoring time: refuse (error) or treat as "
        "missing (default: error)",
    )
    train.add_argument("--seed", type=int, default=42)
    _add_promote(train, "make the new version champion (default: only the first version)")
    _add_store(train)

    score = commands.add_parser(
        "score",
        help="score a table, a CSV file or Parquet files in chunks (resumable, locked)",
        description="Score rows in chunks: a PostgreSQL table into a table (upsert) or back "
        "into itself, a CSV file into a CSV file, Parquet files into Parquet files. Exit codes: "
        "0 done, 1 internal failure, 2 usage, 3 bad input (before any work, or more failed "
        "rows than --max-error-rate), 4 model problem, 5 store unreachable, 6 another run "
        "holds the lock, 7 done but some rows could not be scored (see the errors).",
    )
    score.add_argument(
        "--model",
        required=True,
        help="a .pmml/.pkl file, a bundle directory, or name[@version|@alias]",
    )
    source = score.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        help="a CSV file, a .parquet file or a directory of them, or "
        "postgresql://.../db?table=schema.name",
    )
    source.add_argument("--input-table", metavar="TABLE", help="a table in the --dsn database")
    sink = score.add_mutually_exclusive_group()
    sink.add_argument(
        "--output",
        help="a CSV file, a .parquet file or directory (replaced when complete), or "
        "postgresql://.../db?table=schema.name (upserted by key, created if absent)",
    )
    sink.add_argument("--output-table", metavar="TABLE", help="a table in the --dsn database")
    sink.add_argument(
        "--write-back",
        action="store_true",
        help="tables: UPDATE the input table's prediction columns (prediction, "
        "probability_<class>, model_version; see --output-column)",
    )
    score.add_argument("--dsn", help="database of --input-table/--output-table (default: setup's)")
    score.add_argument("--engine", default="auto", choices=["auto", *ENGINES])
    score.add_argument(
        "--key", help="key column (tables: default the primary key; files: carried into the errors)"
    )
    score.add_argument("--where", help="tables: SQL condition choosing the rows to score")
    score.add_argument(
        "--stale-only",
        action="store_true",
        help="tables: only rows with no score from this model version yet",
    )
    score.add_argument(
        "--feature",
        nargs="+",
        default=[],
        metavar="FIELD=COLUMN",
        help="tables: model fields read from differently named columns",
    )
    score.add_argument(
        "--output-column",
        nargs="+",
        default=[],
        metavar="OUTPUT=COLUMN",
        help="tables: where each output goes, e.g. prediction=risk 'probability(1)=risk_p'",
    )
    score.add_argument(
        "--version-column",
        default="model_version",
        help="tables: the column recording each score's model version (default model_version)",
    )
    score.add_argument(
        "--keep",
        nargs="+",
        default=[],
        metavar="COL",
        help="files: input columns to carry into the output, before the predictions",
    )
    score.add_argument(
        "--errors",
        help="files: where rows that can't be scored go (default OUTPUT.errors.csv; Parquet: "
        "OUTPUT.errors/); tables: always scorekit.batch_errors",
    )
    score.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    score.add_argument(
        "--run",
        help="the run's name, which --resume looks for (default: today's UTC date)",
    )
    score.add_argument(
        "--resume",
        action="store_true",
        help="continue the run of this name after its last written chunk; nothing to do if "
        "it finished",
    )
    score.add_argument(
        "--max-error-rate",
        type=float,
        default=DEFAULT_MAX_ERROR_RATE,
        help="stop the run when more than this fraction of rows can't be scored "
        f"(default {DEFAULT_MAX_ERROR_RATE})",
    )
    score.add_argument(
        "--dask",
        metavar="SCHEDULER",
        help="score partitions on a Dask cluster: a scheduler address, or 'local'",
    )
    score.add_argument("--dask-workers", type=int, help="--dask local: worker processes")
    score.add_argument("--partitions", type=int, help="--dask: pieces of a table (key ranges)")
    _add_store(score)

    models = commands.add_parser("models", help="list, show, promote and roll back models")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add_store(actions.add_parser("list", help="models in the store with their champion"))
    show = actions.add_parser("show", help="a version's manifest (default: the champion)")
    show.add_argument("ref", metavar="NAME[@VERSION|@ALIAS]")
    _add_store(show)
    promote_cmd = actions.add_parser("promote", help="make a version the champion")
    promote_cmd.add_argument("name")
    promote_cmd.add_argument("version")
    _add_store(promote_cmd)
    rollback = actions.add_parser("rollback", help="make the previous champion champion again")
    rollback.add_argument("name")
    _add_store(rollback)

    serve = commands.add_parser(
        "serve", help="the HTTP app (functions/wsgi.py) under gunicorn, on loopback by default"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument("--workers", type=int, default=2, help="worker processes")
    serve.add_argument(
        "--timeout", type=int, default=120, help="seconds a request may take (large batches)"
    )
    _add_store(serve)

    commands.add_parser("openapi", help="print the HTTP routes' OpenAPI document (JSON)")

    package = commands.add_parser(
        "package", help="a lean deployment package for AWS Lambda or Azure Functions"
    )
    targets = package.add_subparsers(dest="platform", required=True, metavar="PLATFORM")
    for platform, default, what in (
        ("lambda", "dist/lambda.zip", "a zip for AWS Lambda (python3.11)"),
        ("azure", "dist/azure", "a Function App folder for Azure Functions (Python 3.11)"),
    ):
        target = targets.add_parser(platform, help=what)
        target.add_argument("--model", required=True, help="name[@version|@alias] in the store")
        target.add_argument("--output", default=default, help=f"(default {default})")
        target.add_argument(
            "--extra",
            nargs="+",
            default=[],
            choices=["sklearn", "s3"],
            help="also package the sklearn engine (scikit-learn, pandas, the pickle) or boto3",
        )
        _add_store(target)

    bench = commands.add_parser("bench", help="benchmarks that write docs/benchmarks.md")
    bench_kinds = bench.add_subparsers(dest="kind", required=True, metavar="KIND")
    engines = _bench_parser(bench_kinds, "engines", "sklearn vs pypmml vs native, side by side")
    engines.add_argument("--rows", type=int, default=100_000, help="batch size")
    engines.add_argument("--calls", type=int, default=10_000, help="one-record calls (native)")
    engines.add_argument(
        "--slow-calls",
        type=int,
        default=1_000,
        help="one-record calls for sklearn and pypmml (each is ~1-30 ms)",
    )
    engines.add_argument("--repeats", type=int, default=3, help="batch repeats (median)")
    engines.add_argument("--cold-runs", type=int, default=5, help="fresh processes (median)")

    http_bench = _bench_parser(
        bench_kinds, "http", "the HTTP protocol in-process and scorekit serve under load"
    )
    http_bench.add_argument("--calls", type=int, default=2_000, help="one-record calls")
    http_bench.add_argument("--batch-calls", type=int, default=100, help="1,000-record calls")
    http_bench.add_argument("--seconds", type=int, default=10, help="load per connection count")
    http_bench.add_argument("--cold-runs", type=int, default=5, help="fresh processes (median)")

    db_bench = _bench_parser(
        bench_kinds, "db", "in-database scoring: no trigger vs row and statement triggers"
    )
    db_bench.add_argument("--rows", type=int, default=100_000, help="rows per INSERT ... SELECT")
    db_bench.add_argument("--singles", type=int, default=2_000, help="single-row INSERTs")
    db_bench.add_argument(
        "--slow-rows", type=int, default=500, help="rows for the sklearn engine's row trigger"
    )
    db_bench.add_argument(
        "--repeats", type=int, default=5, help="rounds, each timing every trigger (median)"
    )
    db_bench.add_argument("--cold-runs", type=int, default=5, help="new connections (median)")
    db_bench.add_argument("--dsn", help="PostgreSQL DSN (default: $SCOREKIT_DSN or setup's)")

    batch_bench = _bench_parser(
        bench_kinds, "batch", "scorekit score over a table vs a copy-only baseline, two sizes"
    )
    batch_bench.add_argument("--rows", type=int, default=2_000_000, help="the large table")
    batch_bench.add_argument("--small-rows", type=int, default=200_000, help="the small table")
    batch_bench.add_argument("--dsn", help="PostgreSQL DSN (default: $SCOREKIT_DSN or setup's)")

    db = commands.add_parser("db", help="score inside PostgreSQL: install, publish, attach")
    db_actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")

    def db_action(name: str, help_text: str) -> argparse.ArgumentParser:
        action = db_actions.add_parser(name, help=help_text)
        action.add_argument("--dsn", help="PostgreSQL DSN (default: $SCOREKIT_DSN or setup's)")
        return action

    db_action("url", "print the DSN in use ($SCOREKIT_DSN or setup's)")
    db_action("install", "create the scorekit schema, roles and PL/Python functions")
    db_action("uninstall", "drop the scorekit schema (scored tables and roles stay)")
    publish = db_action("publish", "copy a model version from the store into the database")
    publish.add_argument("ref", metavar="NAME[@VERSION|@ALIAS]", help="default: the champion")
    _add_promote(publish, "make it the database's champion (default: only if the model has none)")
    publish.add_argument(
        "--trust-pickle",
        action="store_true",
        help="let the server's sklearn engine unpickle model.pkl (runs code as the server's OS "
        "user; superuser only). Without it the database scores the PMML only",
    )
    _add_store(publish)
    attach = db_action("attach", "score a table's rows on insert")
    attach.add_argument("table", help="the table, as in SQL (schema.table)")
    attach.add_argument("model", metavar="NAME[@VERSION]", help="default: follow the champion")
    attach.add_argument(
        "--mode",
        choices=["row", "statement"],
        default="row",
        help="row: BEFORE INSERT OR UPDATE per row (single-row inserts); statement: AFTER "
        "INSERT per statement, vectorised (bulk INSERT ... SELECT and COPY; needs a primary key)",
    )
    attach.add_argument(
        "--output",
        nargs="+",
        default=[],
        metavar="OUTPUT=COLUMN",
        help="where each output goes, e.g. prediction=risk 'probability(1)=risk_p' (default: "
        "prediction and probability_<class> columns)",
    )
    attach.add_argument(
        "--feature",
        nargs="+",
        default=[],
        metavar="FIELD=COLUMN",
        help="model fields read from differently named columns (default: same name, any case)",
    )
    attach.add_argument("--version-column", help="a column to record the scoring model version")
    attach.add_argument(
        "--on-error",
        choices=["raise", "null"],
        default="raise",
        help="a row that can't be scored: fail the statement (raise) or keep it with NULL "
        "scores and record why in scorekit.errors (null)",
    )
    attach.add_argument("--engine", choices=["auto", "native", "sklearn"], default="auto")
    detach = db_action("detach", "stop scoring a table (its scores stay)")
    detach.add_argument("table")
    rescore = db_action("rescore", "score a table's existing rows with the deployed model")
    rescore.add_argument("table")
    rescore.add_argument(
        "--stale-only", action="store_true", help="only rows whose version column differs"
    )
    rescore.add_argument("--batch-size", type=int, help="rows per vectorised call (10,000)")
    db_promote_cmd = db_action("promote", "make a published version the database's champion")
    db_promote_cmd.add_argument("name")
    db_promote_cmd.add_argument("version", type=int)
    db_rollback = db_action("rollback", "make the previous champion champion again")
    db_rollback.add_argument("name")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from ._training import train

    manifest = train(
        args.data,
        args.target,
        args.name,
        algorithm=args.algorithm,
        store=args.store,
        task=args.task,
        categorical=tuple(args.categorical),
        invalid=args.invalid,
        seed=args.seed,
        promote=args.promote,
    )
    store = open_store(args.store)
    champion = store.resolve(manifest.name)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in manifest.metrics.items())
    print(manifest.version)
    print(
        f"published {manifest.ref} to {store.url} ({metrics}); champion is version {champion}",
        file=sys.stderr,
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from ._batch import BatchJob, run_batch

    job = BatchJob(
        model=args.model,
        input=args.input,
        output=args.output,
        input_table=args.input_table,
        output_table=args.output_table,
        engine=args.engine,
        store=args.store,
        dsn=args.dsn,
        key=args.key,
        where=args.where,
        stale_only=args.stale_only,
        write_back=args.write_back,
        features=tuple(_pairs(args.feature, "--feature").items()),
        outputs=tuple(_pairs(args.output_column, "--output-column").items()),
        version_column=args.version_column,
        keep=tuple(args.keep),
        errors=args.errors,
        chunk_size=args.chunk_size,
        resume=args.resume,
        run_name=args.run,
        max_error_rate=args.max_error_rate,
        dask=args.dask,
        dask_workers=args.dask_workers,
        partitions=args.partitions,
    )
    result = run_batch(job)
    print(f"scorekit: {result.summary()}", file=sys.stderr)
    return result.exit_code


def cmd_models(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    if args.action == "list":
        names = store.models()
        if not names:
            print(f"no models in {store.url}", file=sys.stderr)
            return 0
        print(f"{'model':<20} {'champion':>8} {'versions':>8}  created (champion)    metrics")
        for name in names:
            versions = store.versions(name)
            champion = store.aliases(name).get(CHAMPION, {}).get("version", "-")
            shown = store.manifest(name, champion) if champion != "-" else None
            metrics = " ".join(f"{k}={v:.4f}" for k, v in (shown.metrics if shown else {}).items())
            created = shown.created[:19] if shown else ""
            print(f"{name:<20} {champion:>8} {len(versions):>8}  {created:<20}  {metrics}")
        return 0
    if args.action == "show":
        name, selector = parse_ref(args.ref)
        version = store.resolve(name, selector)
        described = store.manifest(name, version).to_dict()
        aliases = store.aliases(name)
        described["aliases"] = {alias: entry["version"] for alias, entry in aliases.items()}
        print(json.dumps(described, indent=2))
        return 0
    if args.action == "promote":
        before = store.aliases(args.name).get(CHAMPION, {}).get("version")
        version = store.promote(args.name, args.version)
        print(f"{args.name}: champion is now version {version} (was {before or 'none'})")
        return 0
    before = store.resolve(args.name)
    version = store.rollback(args.name)
    stack = champion_stack(store.champion_history(args.name))
    print(
        f"{args.name}: rolled back to version {version} (was {before}); "
        f"champion stack: {' -> '.join(stack)}"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ._bench import run_engines

    options = (
        "rows", "calls", "slow_calls", "repeats", "cold_runs", "singles", "slow_rows",
        "batch_calls", "seconds", "small_rows",
    )  # fmt: skip
    for option in options:
        if getattr(args, option, 1) < 1:
            raise UsageError(f"--{option.replace('_', '-')} must be at least 1")
    if not Path(args.data).is_file():
        raise UsageError(f"--data {args.data} does not exist; run from the project root")
    if args.kind == "http":
        from ._bench_http import run_http

        body = run_http(
            Path(args.data),
            args.target,
            Path(args.output),
            args.calls,
            args.batch_calls,
            args.seconds,
            args.cold_runs,
        )
    elif args.kind == "batch":
        from ._bench_batch import run_batch_bench

        body = run_batch_bench(
            Path(args.data), args.target, Path(args.output), args.rows, args.small_rows, args.dsn
        )
    elif args.kind == "db":
        from ._bench_db import run_db

        body = run_db(
            Path(args.data),
            args.target,
            Path(args.output),
            args.rows,
            args.singles,
            args.slow_rows,
            args.repeats,
            args.cold_runs,
            args.dsn,
        )
    else:
        body = run_engines(
            Path(args.data),
            args.target,
            Path(args.output),
            args.rows,
            args.calls,
            args.slow_calls,
            args.repeats,
            args.cold_runs,
        )
    print(body)
    print(f"wrote the {args.kind} section of {args.output}", file=sys.stderr)
    return 0


def _pairs(items: list[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.rpartition("=")
        if not sep or not key or not value:
            raise UsageError(f"{option} expects NAME=COLUMN, got {item!r}")
        pairs[key] = value
    return pairs


def cmd_db(args: argparse.Namespace) -> int:
    if args.action == "url":
        print(args.dsn or database_url())
        return 0
    from . import _db

    dsn = args.dsn
    if args.action == "install":
        print(_db.install(dsn))
    elif args.action == "uninstall":
        print(_db.uninstall(dsn))
    elif args.action == "publish":
        name, version, what = _db.publish(
            args.ref,
            store=args.store,
            promote=args.promote,
            trust_pickle=args.trust_pickle,
            dsn=dsn,
        )
        print(f"{name}@{version}: {what}")
    elif args.action == "attach":
        print(
            _db.attach(
                args.table,
                args.model,
                mode=args.mode,
                outputs=_pairs(args.output, "--output"),
                features=_pairs(args.feature, "--feature"),
                version_column=args.version_column,
                on_error=args.on_error,
                engine=args.engine,
                dsn=dsn,
            )
        )
    elif args.action == "detach":
        print(_db.detach(args.table, dsn))
    elif args.action == "rescore":
        count = _db.rescore(
            args.table, stale_only=args.stale_only, batch_size=args.batch_size, dsn=dsn
        )
        print(f"rescored {count} rows of {args.table}")
    elif args.action == "promote":
        version = _db.promote(args.name, args.version, dsn)
        print(f"{args.name}: champion in the database is now version {version}")
    else:
        version = _db.rollback(args.name, dsn)
        print(f"{args.name}: rolled back; champion in the database is now version {version}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn serving functions/wsgi.py (so signals reach it)."""
    from pathlib import Path

    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    root = Path(__file__).resolve().parents[1]
    if not (root / "functions" / "wsgi.py").is_file():
        raise UsageError(f"{root}/functions/wsgi.py is missing; serve runs from a checkout")
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        raise UsageError("scorekit serve needs gunicorn: pip install gunicorn") from None
    env = dict(os.environ)
    store = args.store or env.get("SCOREKIT_STORE") or "pmml"
    if "://" not in store:
        store = str(Path(store).resolve())  # gunicorn runs from the checkout's root
    env["SCOREKIT_STORE"] = store
    argv = [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{args.host}:{args.port}",
        "--workers", str(args.workers),
        "--chdir", str(root),
        "--timeout", str(args.timeout),
        "functions.wsgi:application",  # logs one JSON line per request itself
    ]  # fmt: skip
    print(
        f"serving {store} on http://{args.host}:{args.port} with {args.workers} worker(s)",
        file=sys.stderr,
    )
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def cmd_package(args: argparse.Namespace) -> int:
    from ._package import package_azure, package_lambda

    build = package_lambda if args.platform == "lambda" else package_azure
    report = build(args.model, args.output, store=args.store, extras=tuple(args.extra))
    for line in report.lines():
        print(line)
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from ._openapi import openapi_document

    print(json.dumps(openapi_document(), indent=2))
    return 0


COMMANDS = {
    "train": cmd_train,
    "score": cmd_score,
    "models": cmd_models,
    "bench": cmd_bench,
    "db": cmd_db,
    "serve": cmd_serve,
    "openapi": cmd_openapi,
    "package": cmd_package,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="scorekit: %(message)s",
        stream=sys.stderr,
    )
    try:
        return COMMANDS[args.command](args)
    except ScorekitError as exc:
        print(f"scorekit: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("scorekit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or os.environ.get("SCOREKIT_DEBUG"):
            raise
        print(
            f"scorekit: internal error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
