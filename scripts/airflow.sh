#!/usr/bin/env bash
# `make airflow`: Airflow's scheduler, DAG processor, triggerer and UI (`airflow standalone`) for
# scorekit's DAGs, in the foreground, with the UI on http://127.0.0.1:8080 only (loopback). Stop
# it with Ctrl-C (or `pkill -f "airflow standalone"` from another shell). Its home is .airflow/
# (SQLite metadata, logs, and the admin password in simple_auth_manager_passwords.json.generated);
# the DAGs read the database `scorekit db url` prints and the store $SCOREKIT_STORE (pmml/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DSN=${SCOREKIT_DSN:-$(.venv/bin/scorekit db url)}
export PATH="$ROOT/.venv/bin:$PATH"
export AIRFLOW_HOME=${AIRFLOW_HOME:-$ROOT/.airflow}
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags" AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=${AIRFLOW_PORT:-8080}
export SCOREKIT_STORE=${SCOREKIT_STORE:-$ROOT/pmml}
AIRFLOW_CONN_SCOREKIT_POSTGRES=${AIRFLOW_CONN_SCOREKIT_POSTGRES:-$(.venv/bin/python -c '
import json, sys
from psycopg.conninfo import conninfo_to_dict
d = conninfo_to_dict(sys.argv[1])
conn = {"conn_type": "postgres", "host": d.get("host", "localhost"), "port": int(d.get("port", 5432)),
        "schema": d.get("dbname"), "login": d.get("user"), "password": d.get("password")}
print(json.dumps({k: v for k, v in conn.items() if v}))' "$DSN")}
export AIRFLOW_CONN_SCOREKIT_POSTGRES
mkdir -p "$AIRFLOW_HOME"
echo "airflow: UI on http://127.0.0.1:$AIRFLOW__API__PORT (home $AIRFLOW_HOME); Ctrl-C stops it"
exec airflow standalone
