#!/usr/bin/env bash
# `make demo`: the main job on the embedded default. Train a model on data/audit.csv, export it
# (PMML + pickle), publish it to the local store as champion, score a CSV with it, summarise.
set -euo pipefail
cd "$(dirname "$0")/.."
SK=.venv/bin/scorekit
STORE=${SCOREKIT_STORE:-pmml}
OUT=${SCOREKIT_DEMO_OUT:-out}
export SCOREKIT_STORE=$STORE
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1. train a logistic regression on data/audit.csv, export PMML + pickle, publish to $STORE/"
version=$($SK train --data data/audit.csv --target Adjusted --name audit --algorithm logreg --promote)

step "2. the store: audit@$version is champion"
$SK models list

step "3. score data/audit_na.csv (1,899 rows, many values missing) with audit@champion"
echo "   (engine auto: the native numpy PMML engine)"
$SK score --model audit@champion --input data/audit_na.csv --output "$OUT/audit_scored.csv" \
    --keep Age Occupation Income

step "4. the same rows through the PMML reference engine (pypmml, a JVM) and the pickle (sklearn)"
$SK score --model audit@champion --engine pypmml --input data/audit_na.csv \
    --output "$OUT/audit_scored_pypmml.csv"
$SK score --model audit@champion --engine sklearn --input data/audit_na.csv \
    --output "$OUT/audit_scored_sklearn.csv"

step "5. bad input is refused with a clear message (expected to fail):"
printf 'Age,Employment,Education,Marital,Occupation,Income,Gender,Deductions,Hours\n38,Martian,College,Unmarried,Service,81838,Female,FALSE,72\n' > "$OUT/bad.csv"
$SK score --model audit --input "$OUT/bad.csv" --output "$OUT/bad_scored.csv" || echo "(exit code $?)"

step "6. in PostgreSQL: install scorekit into a fresh database, publish audit, attach it to a table"
DSN=$(.venv/bin/python -c 'import sys, scorekit; from psycopg.conninfo import make_conninfo; print(make_conninfo(scorekit.database_url(), dbname="scorekit_demo"))')
ADMIN=$(.venv/bin/scorekit db url)
psql "$ADMIN" -qX -v ON_ERROR_STOP=1 -c 'DROP DATABASE IF EXISTS scorekit_demo' -c 'CREATE DATABASE scorekit_demo'
$SK db install --dsn "$DSN"
$SK db publish audit --dsn "$DSN"
psql "$DSN" -qX -v ON_ERROR_STOP=1 -c "CREATE TABLE applications (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, age integer, employment text,
    education text, marital text, occupation text, income double precision, gender text,
    deductions text, hours integer, prediction integer, probability_1 double precision,
    model_version integer)"
$SK db attach applications audit --version-column model_version --dsn "$DSN"

step "7. rows inserted with psql are scored by the database as they are written"
psql "$DSN" -X -v ON_ERROR_STOP=1 -c "INSERT INTO applications
    (age, employment, education, marital, occupation, income, gender, deductions, hours) VALUES
    (38, 'Private', 'College', 'Unmarried', 'Service', 81838, 'Female', 'FALSE', 72),
    (45, 'Private', 'Bachelor', 'Married', 'Executive', 127743.82, 'Male', 'TRUE', 50),
    (NULL, 'SelfEmp', NULL, 'Married', 'Repair', NULL, 'Male', 'FALSE', NULL)
    RETURNING id, age, occupation, prediction, round(probability_1::numeric, 4) AS p1, model_version"
echo "   and a row the model can't score fails its statement, naming it (expected to fail):"
psql "$DSN" -qX -c "INSERT INTO applications (age, employment, education, marital, occupation,
    income, gender, deductions, hours) VALUES (38, 'Martian', 'College', 'Unmarried', 'Service',
    81838, 'Female', 'FALSE', 72)" 2>&1 | sed -n 1p || true

step "8. over HTTP: scorekit serve (gunicorn, 2 workers) on loopback, called with curl"
PORT=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$SK serve --port "$PORT" --workers 2 > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/api/health" >/dev/null && break; sleep 0.2; done
echo "   POST /api/models/audit/predict with two records:"
curl -sS -X POST "http://127.0.0.1:$PORT/api/models/audit/predict" -H 'Content-Type: application/json' \
    -d '[{"Age": 38, "Employment": "Private", "Education": "College", "Marital": "Unmarried",
          "Occupation": "Service", "Income": 81838, "Gender": "Female", "Deductions": "FALSE", "Hours": 72},
         {"Age": 45, "Employment": "Private", "Education": "Bachelor", "Marital": "Married",
          "Occupation": "Executive", "Income": 127743.82, "Gender": "Male", "Deductions": "TRUE", "Hours": 50}]'
echo
echo "   a record with an unseen category gets a 422 naming it (expected):"
curl -sS -o /dev/stdout -w '\n   HTTP %{http_code}\n' -X POST "http://127.0.0.1:$PORT/api/models/audit/predict" \
    -H 'Content-Type: application/json' -d '{"Age": 38, "Employment": "Martian", "Education": "College",
    "Marital": "Unmarried", "Occupation": "Service", "Income": 81838, "Gender": "Female",
    "Deductions": "FALSE", "Hours": 72}'
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
trap - EXIT

step "9. a batch job, as cron runs it: scorekit score over a 18,990-row table, in chunks"
psql "$DSN" -qX -v ON_ERROR_STOP=1 -c "CREATE TABLE audit_raw (age integer, employment text,
    education text, marital text, occupation text, income double precision, gender text,
    deductions text, hours integer, adjusted integer)" \
  -c "\\copy audit_raw FROM 'data/audit_na.csv' (FORMAT csv, HEADER, NULL 'N/A')" \
  -c "CREATE TABLE loans AS SELECT row_number() OVER () AS id, r.* FROM generate_series(1, 10),
      audit_raw r" -c "ALTER TABLE loans ADD PRIMARY KEY (id)"
$SK score --model audit --dsn "$DSN" --input-table loans --output-table loan_scores --run demo
psql "$DSN" -X -c "SELECT id, prediction, round(probability_1::numeric, 4) AS p1, model_version,
    run_id FROM loan_scores ORDER BY id LIMIT 3"
echo "   run again with --resume: the finished run is not repeated"
$SK score --model audit --dsn "$DSN" --input-table loans --output-table loan_scores --run demo --resume

step "summary"
.venv/bin/python - "$OUT/audit_scored.csv" "$OUT/audit_scored_pypmml.csv" \
    "$OUT/audit_scored_sklearn.csv" "$STORE" <<'PY'
import csv, sys
import scorekit
scored, reference, pickled, store = sys.argv[1:]
def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))
ours = rows(scored)
manifest = scorekit.open_store(store).bundle("audit", scorekit.open_store(store).resolve("audit")).manifest
print(f"model         {manifest.ref} ({manifest.algorithm}), created {manifest.created[:19]}")
print("holdout       " + ", ".join(f"{k} {v:.4f}" for k, v in manifest.metrics.items()))
print(f"scored        {len(ours)} rows -> {scored}")
print(f"flagged       {sum(r['prediction'] == '1' for r in ours)} rows predicted Adjusted=1")
for name, other in (("pypmml", rows(reference)), ("sklearn", rows(pickled))):
    same = sum(x["prediction"] == y["prediction"] for x, y in zip(ours, other))
    worst = max(abs(float(x["probability(1)"]) - float(y["probability(1)"]))
                for x, y in zip(ours, other))
    print(f"native vs {name:8} {same}/{len(ours)} labels equal, "
          f"max |diff| of probability(1) {worst:.1e}")
PY
