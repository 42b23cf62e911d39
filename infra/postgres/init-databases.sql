-- Runs once, when the data volume is empty (the postgres image's /docker-entrypoint-initdb.d).
-- POSTGRES_DB creates `mlflow` (runs, registry); MLflow's user store and Prefect get their own.
CREATE DATABASE mlflow_auth OWNER glasswork;
CREATE DATABASE prefect OWNER glasswork;
