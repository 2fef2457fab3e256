"""The scorekit command line. Errors print one clear line and exit with the error's exit_code:
0 success, 1 internal failure, 2 usage, 3 bad input data, 4 model problem, 5 store unreachable."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._config import database_url
from ._csvio import DEFAULT_CHUNK_SIZE, AtomicCsvWriter, CsvReader
from ._errors import InputError, ScorekitError, UsageError
from ._loading import load_model, parse_ref
from ._model import Model
from ._output import PREDICTION
from ._scorer import ENGINES
from ._store import CHAMPION, champion_stack, open_store
from ._training import ALGORITHMS

log = logging.getLogger("scorekit")


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        help="model store: a directory or s3://bucket/prefix (default: $SCOREKIT_STORE or pmml/)",
    )


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
    promote = train.add_mutually_exclusive_group()
    promote.add_argument(
        "--promote",
        dest="promote",
        action="store_true",
        default=None,
        help="make the new version champion (default: only the first version)",
    )
    promote.add_argument("--no-promote", dest="promote", action="store_false")
    _add_store(train)

    score = commands.add_parser("score", help="score a CSV file")
    score.add_argument(
        "--model",
        required=True,
        help="a .pmml/.pkl file, a bundle directory, or name[@version|@alias]",
    )
    score.add_argument("--input", required=True, help="CSV with a header line")
    score.add_argument("--output", required=True, help="CSV to write (replaced only on success)")
    score.add_argument("--engine", default="auto", choices=["auto", *ENGINES])
    score.add_argument(
        "--keep",
        nargs="+",
        default=[],
        metavar="COL",
        help="input columns to carry into the output, before the predictions",
    )
    score.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
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

    bench = commands.add_parser("bench", help="benchmarks that write docs/benchmarks.md")
    bench_kinds = bench.add_subparsers(dest="kind", required=True, metavar="KIND")
    engines = bench_kinds.add_parser("engines", help="sklearn vs pypmml vs native, side by side")
    engines.add_argument("--data", default="data/audit.csv", help="training and scoring rows")
    engines.add_argument("--target", default="Adjusted", help="the column to predict")
    engines.add_argument("--output", default="docs/benchmarks.md")
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

    db = commands.add_parser("db", help="database commands")
    db_actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    db_actions.add_parser("url", help="print the DSN in use ($SCOREKIT_DSN or setup's)")
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


def _summary(model: Model, predictions: list[Any]) -> str:
    if not predictions:
        return "no rows"
    if model.task == "regression":
        values = np.asarray(predictions, dtype=np.float64)
        return (
            f"prediction mean {values.mean():.4g}, min {values.min():.4g}, max {values.max():.4g}"
        )
    counts = Counter(predictions)
    total = len(predictions)
    return "predicted classes: " + ", ".join(
        f"{label}: {counts[label]} ({100 * counts[label] / total:.1f}%)"
        for label in model.classes or []
    )


def cmd_score(args: argparse.Namespace) -> int:
    if args.chunk_size < 1:
        raise UsageError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    started = time.perf_counter()
    model = load_model(args.model, engine=args.engine, store=args.store)
    with CsvReader(args.input, args.chunk_size) as reader:
        model.manifest.schema.check_columns(reader.header, model.ref)
        absent = [c for c in args.keep if c not in reader.header]
        if absent:
            raise UsageError(
                f"--keep names column(s) not in {args.input}: {', '.join(absent)}; "
                f"its columns are: {', '.join(reader.header)}"
            )
        clash = [c for c in args.keep if c in model.output_columns]
        if clash:
            raise UsageError(
                f"--keep column(s) {', '.join(clash)} would collide with the "
                "output columns; rename them in the input"
            )
        writer = AtomicCsvWriter(args.output, [*args.keep, *model.output_columns])
        predictions: list[Any] = []
        try:
            for offset, chunk in reader.chunks():
                try:
                    scored = model.predict_columns(chunk, row_offset=offset)
                except InputError as exc:
                    raise InputError(
                        f"{exc.message} (in {args.input}, rows count from 0 at the first line "
                        "after the header; nothing was written)",
                        exc.details,
                    ) from exc
                writer.write_columns({**{c: chunk[c] for c in args.keep}, **scored})
                predictions.extend(scored[PREDICTION].tolist())
        except BaseException:
            writer.abort()
            raise
        writer.commit()
    elapsed = time.perf_counter() - started
    rate = f" ({writer.rows / elapsed:,.0f} rows/s)" if elapsed > 0 and writer.rows else ""
    print(
        f"scored {writer.rows} rows of {args.input} with {model.ref} (engine {model.engine}) "
        f"in {elapsed:.2f} s{rate} -> {args.output}",
        file=sys.stderr,
    )
    print(_summary(model, predictions), file=sys.stderr)
    return 0


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

    for option in ("rows", "calls", "slow_calls", "repeats", "cold_runs"):
        if getattr(args, option) < 1:
            raise UsageError(f"--{option.replace('_', '-')} must be at least 1")
    if not Path(args.data).is_file():
        raise UsageError(f"--data {args.data} does not exist; run from the project root")
    print(
        run_engines(
            Path(args.data),
            args.target,
            Path(args.output),
            args.rows,
            args.calls,
            args.slow_calls,
            args.repeats,
            args.cold_runs,
        )
    )
    print(f"wrote the engines section of {args.output}", file=sys.stderr)
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    print(database_url())
    return 0


COMMANDS = {
    "train": cmd_train,
    "score": cmd_score,
    "models": cmd_models,
    "bench": cmd_bench,
    "db": cmd_db,
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
