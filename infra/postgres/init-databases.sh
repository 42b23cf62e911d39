#!/bin/sh
# Runs once, when the data volume is empty (the postgres image's /docker-entrypoint-initdb.d, as
# the superuser of POSTGRES_USER). MLflow and Prefect each get a login role of their own that owns
# its databases and nothing else: a leaked MLflow password does not open Prefect's database, and
# neither role is a superuser. Their passwords are compose secrets, read from their files here
# (psql's :'variable' quotes them) and never written into this script or the image.
# The image sources a script it cannot execute: so no `set` here, and `exit` on every failure.
glasswork_secrets=${GLASSWORK_SECRETS_DIR:-/run/secrets}
for glasswork_role in mlflow prefect; do
    if [ ! -s "$glasswork_secrets/${glasswork_role}_db_password" ]; then
        echo "init-databases: no password for the role $glasswork_role in $glasswork_secrets/${glasswork_role}_db_password" >&2
        exit 1
    fi
done
psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v mlflow_password="$(cat "$glasswork_secrets/mlflow_db_password")" \
    -v prefect_password="$(cat "$glasswork_secrets/prefect_db_password")" <<'SQL' || exit 1
CREATE ROLE mlflow LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'mlflow_password';
CREATE ROLE prefect LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'prefect_password';
-- mlflow: runs and the registry; mlflow_auth: MLflow's users and permissions (basic_auth.ini).
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
CREATE DATABASE prefect OWNER prefect;
-- Every role may connect to every database by default (PUBLIC): only the owner may here.
REVOKE ALL ON DATABASE mlflow, mlflow_auth, prefect FROM PUBLIC;
SQL
