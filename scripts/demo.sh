#!/usr/bin/env bash
# `make demo`: the main job on the embedded default, end to end. Raw events from data/audit.csv
# land in PostgreSQL over several days; Airflow's nightly DAG (run with `airflow dags test`,
# SQLite metadata) builds features, trains, compares and promotes a champion; the champion then
# scores a CSV with three engines, rows inserted with psql (a trigger), records over HTTP (curl
# against scorekit serve) and the rows with no score (the batch DAG); a summary table ends it.
set -euo pipefail
cd "$(dirname "$0")/.."
SK=.venv/bin/scorekit
OUT=${SCOREKIT_DEMO_OUT:-out}
STORE=${SCOREKIT_STORE:-$OUT/store}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: Airflow's home goes under it
if [ -z "${SCOREKIT_STORE:-}" ]; then rm -rf "$STORE"; fi  # the demo's own store starts empty
export SCOREKIT_STORE=$STORE
step() { printf '\n== %s\n' "$*"; }

step "1. a fresh database scorekit_demo with scorekit installed, and the raw data seeded"
DSN=$(.venv/bin/python -c 'import sys, scorekit; from psycopg.conninfo import make_conninfo; print(make_conninfo(scorekit.database_url(), dbname="scorekit_demo"))')
ADMIN=$($SK db url)
psql "$ADMIN" -qX -v ON_ERROR_STOP=1 -c 'DROP DATABASE IF EXISTS scorekit_demo' -c 'CREATE DATABASE scorekit_demo'
$SK db install --dsn "$DSN"
.venv/bin/python scripts/seed_demo_data.py "$DSN"

step "2. Airflow runs scorekit_nightly for three nights (airflow dags test, SQLite metadata)"
export AIRFLOW_HOME="$OUT/airflow" AIRFLOW__CORE__DAGS_FOLDER="$PWD/dags" \
    AIRFLOW__CORE__LOAD_EXAMPLES=False PATH="$PWD/.venv/bin:$PATH"
AIRFLOW_CONN_SCOREKIT_POSTGRES=$(.venv/bin/python -c 'import json, sys; from psycopg.conninfo import conninfo_to_dict; d = conninfo_to_dict(sys.argv[1]); print(json.dumps({"conn_type": "postgres", "host": d.get("host", "/var/run/postgresql"), "port": int(d.get("port", 5432)), "schema": d["dbname"], **({"login": d["user"]} if d.get("user") else {})}))' "$DSN")
export AIRFLOW_CONN_SCOREKIT_POSTGRES
rm -rf "$AIRFLOW_HOME"; mkdir -p "$AIRFLOW_HOME"
airflow db migrate > "$OUT/airflow-migrate.log" 2>&1
for night in 2026-11-16 2026-11-17 2026-11-18; do
    if airflow dags test scorekit_nightly "${night}T02:00:00+00:00" > "$OUT/nightly-$night.log" 2>&1; then
        echo "   scorekit_nightly $night 02:00 UTC: success (log: $OUT/nightly-$night.log)"
    else
        echo "   scorekit_nightly $night failed; its log: $OUT/nightly-$night.log" >&2; exit 1
    fi
done
psql "$DSN" -X -c "SELECT d.partition_date AS day, e.rows_loaded AS rows, e.quarantined,
    d.holdout_rows, round(d.challenger_score::numeric, 4) AS challenger,
    round(d.champion_score::numeric, 4) AS champion, d.verdict, d.promoted
    FROM etl.decisions d JOIN etl.extract_log e USING (partition_date) ORDER BY 1"
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

step "6. in PostgreSQL: the DAG published and promoted the champion there too; attach it to a table"
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
curl -sS -w '\n   HTTP %{http_code}\n' -X POST "http://127.0.0.1:$PORT/api/models/audit/predict" \
    -H 'Content-Type: application/json' -d '{"Age": 38, "Employment": "Martian", "Education": "College",
    "Marital": "Unmarried", "Occupation": "Service", "Income": 81838, "Gender": "Female",
    "Deductions": "FALSE", "Hours": 72}'
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
trap - EXIT

step "9. the batch step: scorekit_batch_score scores every feature row with no score yet"
if airflow dags test scorekit_batch_score 2026-11-19T04:00:00+00:00 > "$OUT/batch.log" 2>&1; then
    grep -o "run '[^']*' (id [0-9]*): scored .*" "$OUT/batch.log" | head -n 1 |
        sed -e 's/ \[scorekit.pipeline\].*//' -e 's/^/   /'
else
    echo "   scorekit_batch_score failed; its log: $OUT/batch.log" >&2; exit 1
fi
echo "   the same job as cron runs it: nothing is left (the refused row is not retried)"
$SK score --model audit --dsn "$DSN" --input-table etl.features --key feature_id \
    --output-table etl.scores --stale-only --run demo-cron

step "summary"
.venv/bin/python - "$OUT/audit_scored.csv" "$OUT/audit_scored_pypmml.csv" \
    "$OUT/audit_scored_sklearn.csv" "$STORE" "$DSN" <<'PY'
import csv, sys
import psycopg
import scorekit
scored, reference, pickled, store_url, dsn = sys.argv[1:]
def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))
ours = rows(scored)
store = scorekit.open_store(store_url)
manifest = store.manifest("audit", store.resolve("audit"))
with psycopg.connect(dsn) as conn:
    q = lambda sql: conn.execute(sql).fetchall()
    nights = q("SELECT partition_date, metric, challenger_score, champion_score, promoted, "
               "published_version FROM etl.decisions ORDER BY 1")
    in_db = q("SELECT count(*) FILTER (WHERE prediction IS NOT NULL), count(*) FROM applications")[0]
    batch = q("SELECT count(*), min(model_version), max(model_version) FROM etl.scores")[0]
    drift = q("SELECT partition_date, feature, psi, drifted FROM etl.drift ORDER BY psi DESC")
    in_db_champion = q("SELECT scorekit.champion('audit')")[0][0]
print(f"champion        {manifest.ref} ({manifest.algorithm}); in the database: version {in_db_champion}")
print("holdout         " + ", ".join(f"{k} {v:.4f}" for k, v in manifest.metrics.items()))
for day, metric, challenger, champion, promoted, version in nights:
    against = f" vs champion {champion:.4f}" if champion is not None else " (no champion yet)"
    what = f"promoted as version {version}" if promoted else "champion kept"
    print(f"night of {day}  challenger {metric} {challenger:.4f}{against}: {what}")
print("rows scored     "
      f"CLI file {len(ours)}; database trigger {in_db[0]} of {in_db[1]} inserted; "
      f"HTTP 2 records; batch DAG {batch[0]} (model version {batch[1]})")
for name, other in (("pypmml", rows(reference)), ("sklearn", rows(pickled))):
    same = sum(x["prediction"] == y["prediction"] for x, y in zip(ours, other))
    worst = max(abs(float(x["probability(1)"]) - float(y["probability(1)"]))
                for x, y in zip(ours, other))
    print(f"native vs {name:8} {same}/{len(ours)} labels equal, "
          f"max |diff| of probability(1) {worst:.1e}")
if drift:
    day = drift[0][0]
    top = ", ".join(f"{f} {p:.3f}{' (over threshold)' if d else ''}" for _, f, p, d in drift[:3])
    print(f"drift {day}   highest PSI: {top}")
PY
