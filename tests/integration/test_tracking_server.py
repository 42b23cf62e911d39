"""`tracking=server` against a real team tracking server: PostgreSQL (Debian's binaries) as the
store behind `mlflow server --serve-artifacts --app-name basic-auth`, both started here on
127.0.0.1 and stopped by their PIDs, set up as infra/ sets them up: the databases and their roles
by infra/postgres/init-databases.sh, MLflow logging in as the role `mlflow` (PGPASSWORD), its users
in `mlflow_auth` with infra/mlflow/basic_auth.ini, and the non-admin user the pipeline logs in as
made by infra/mlflow/create_worker_user.py. The tiny pipeline runs against it; the model is
registered and takes `champion` on the server, loads and predicts from `models:/NAME@champion`
through it, and every artifact lies in the server's artifact destination, none in the run's
folder or the repository. A wrong password, or none, is refused (401)."""

from __future__ import annotations

import base64
import configparser
import importlib
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
from tests.conftest import REPO, tiny_overrides
from tests.integration.conftest import flow_runs
from tests.integration.servers import free_port, log_tail, stop_group, wait_healthy

BIN = Path(sys.executable).parent
PG_TOOLS = ("initdb", "postgres")
PG_DEBIAN = Path("/usr/lib/postgresql")  # Debian: one <major version>/bin folder each, off PATH
PG_USER = "glasswork"
MODEL = "glasswork-sentiment"
INFRA = REPO / "infra"
WORKER_USER = "glasswork-ci"


def _pg_bindir() -> Path:
    """The folder holding PostgreSQL's server binaries; the test fails (not skips) without them."""
    candidates = []
    if pg_config := shutil.which("pg_config"):
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            candidates.append(Path(done.stdout.strip()))
    versions = PG_DEBIAN.glob("*/bin")  # the newest first
    candidates += sorted(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates += [Path(initdb).parent, Path(initdb).resolve().parent]
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in PG_TOOLS):
            return folder
    pytest.fail(
        "PostgreSQL server binaries (initdb, postgres) not found in `pg_config --bindir`, "
        "/usr/lib/postgresql/*/bin or on PATH: run `make postgres` as root (installs Debian's postgresql "
        "package), or `apt-get install postgresql`",
        pytrace=False,
    )


def _pg_driver():
    """The PostgreSQL driver module and its SQLAlchemy scheme: psycopg 3 (SQLAlchemy 2.1's default
    for ``postgresql://``), else psycopg2. Named in the URI, so either works whatever the default."""
    for module, scheme in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        try:
            return importlib.import_module(module), scheme
        except ImportError:
            continue
    pytest.fail(
        "no PostgreSQL driver for MLflow's postgresql:// store: install psycopg[binary] (a dependency in pyproject)",
        pytrace=False,
    )


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root (initdb refuses root), else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return entry.pw_uid, entry.pw_gid
    pytest.fail("running as root, and no unprivileged user (postgres, nobody) to run PostgreSQL as", pytrace=False)


@pytest.fixture
def postgres(tmp_path) -> Iterator[tuple[str, Callable, dict]]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (TCP only, password auth), initialised by
    infra/postgres/init-databases.sh; yields the SQLAlchemy URI of the database ``mlflow`` without
    its password, a function that connects to it as the superuser, and the roles' logins."""
    driver, scheme = _pg_driver()
    bindir, owner = _pg_bindir(), _unprivileged()
    # Root's pytest folder is private (0700): a cluster run by another user lives outside it.
    base = Path(tempfile.mkdtemp(prefix="glasswork-pg-")) if owner else tmp_path / "postgres"
    try:
        yield from _run_postgres(driver, scheme, bindir, owner, base, tmp_path / "postgres.log")
    finally:
        if owner:
            shutil.rmtree(base, ignore_errors=True)


def _run_postgres(driver, scheme: str, bindir: Path, owner, base: Path, log_path: Path):
    base.mkdir(exist_ok=True)
    password, port = secrets.token_hex(12), free_port()
    (base / "pwfile").write_text(password + "\n")
    if owner:
        os.chown(base, *owner)
        os.chown(base / "pwfile", *owner)
    as_owner = {"user": owner[0], "group": owner[1], "extra_groups": []} if owner else {}
    initdb = [str(bindir / "initdb"), "-D", str(base / "data"), "-U", PG_USER, f"--pwfile={base / 'pwfile'}"]
    initdb += ["--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync"]
    done = subprocess.run(initdb, capture_output=True, text=True, cwd=base, timeout=120, **as_owner)
    assert done.returncode == 0, f"initdb failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    # TCP on 127.0.0.1 only: no Unix socket (its path could pass the 107-byte limit under tmp_path).
    server = [str(bindir / "postgres"), "-D", str(base / "data"), "-p", str(port)]
    server += ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off"]
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(server, cwd=base, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_owner)
    try:
        login = {"host": "127.0.0.1", "port": port, "user": PG_USER, "password": password, "connect_timeout": 3}
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"postgres exited early:\n{log_tail(log_path)}"
            try:
                conn = driver.connect(dbname="postgres", **login)
                break
            except driver.OperationalError:
                assert time.monotonic() < deadline, f"postgres not ready after 60 s:\n{log_tail(log_path)}"
                time.sleep(0.5)
        conn.close()
        roles = _init_databases(bindir, base, port, password)
        roles |= {"port": port, "scheme": scheme, "driver": driver}
        uri = f"{scheme}://mlflow@127.0.0.1:{port}/mlflow"  # the password goes in PGPASSWORD, as in compose
        yield uri, partial(driver.connect, dbname="mlflow", **login), roles
    finally:
        stop_group(proc)
        log.close()


def _init_databases(bindir: Path, base: Path, port: int, superuser_password: str) -> dict:
    """Run infra/postgres/init-databases.sh as the postgres image would (psql as the superuser,
    the roles' passwords as secret files); return the roles' passwords."""
    secrets_dir = base / "secrets"
    secrets_dir.mkdir()
    roles = {"mlflow": secrets.token_hex(12), "prefect": secrets.token_hex(12)}
    for role, role_password in roles.items():
        (secrets_dir / f"{role}_db_password").write_text(role_password)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "GLASSWORK_SECRETS_DIR": str(secrets_dir)}
    env |= {"POSTGRES_USER": PG_USER, "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGPASSWORD": superuser_password}
    done = subprocess.run(["sh", str(INFRA / "postgres" / "init-databases.sh")], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, f"init-databases.sh failed:\n{done.stdout}\n{done.stderr}"
    return roles


def _auth_config(postgres, tmp_path: Path) -> Path:
    """infra/mlflow/basic_auth.ini with this cluster's address in place of the compose service's."""
    config = configparser.ConfigParser()
    config.read(INFRA / "mlflow" / "basic_auth.ini")
    roles = postgres[2]
    assert config["mlflow"]["database_uri"] == "postgresql://mlflow@postgres:5432/mlflow_auth"
    config["mlflow"]["database_uri"] = f"{roles['scheme']}://mlflow@127.0.0.1:{roles['port']}/mlflow_auth"
    path = tmp_path / "basic_auth.ini"
    with path.open("w") as file:
        config.write(file)
    return path


@pytest.fixture
def mlflow_server(postgres, tmp_path) -> Iterator[tuple[str, Path, str]]:
    """`mlflow server` with basic auth on the PostgreSQL store, proxying artifacts into a folder of
    its own; yields its URL, that folder and the admin's password."""
    port, destination = free_port(), tmp_path / "server-artifacts"
    destination.mkdir()
    admin_password = secrets.token_hex(12)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # No background job runner (online scoring, trace archival): it adds ~20 s to every stop.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # As compose.yaml passes them: the role's password for libpq, the admin's for the first start.
    env |= {"PGPASSWORD": postgres[2]["mlflow"], "MLFLOW_AUTH_CONFIG_PATH": str(_auth_config(postgres, tmp_path))}
    env |= {"MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password}
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", postgres[0], "--serve-artifacts", "--app-name"]
    cmd += ["basic-auth", "--artifacts-destination", str(destination), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1"]
    log_path = tmp_path / "mlflow-server.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, "mlflow server", timeout_s=180, log_path=log_path)
        yield url, destination, admin_password
    finally:
        stop_group(proc)
        log.close()


@contextmanager
def _tracking(url: str) -> Iterator[None]:
    """MLflow's global tracking and registry URIs set to ``url`` for a block, then put back."""
    import mlflow

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(url)
    mlflow.set_registry_uri(url)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def _status(url: str, user: str | None = None, password: str = "") -> int:
    """The HTTP status of an MLflow API read, with these basic-auth credentials (or none)."""
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


def _create_worker_user(url: str, admin_password: str, password: str) -> None:
    """infra/mlflow/create_worker_user.py, as compose's `mlflow-users` runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": admin_password}
    env |= {"GLASSWORK_WORKER_USERNAME": WORKER_USER, "GLASSWORK_WORKER_PASSWORD": password}
    for _ in range(2):  # twice: running it again (every `compose up`) is harmless
        done = subprocess.run([sys.executable, str(INFRA / "mlflow" / "create_worker_user.py")], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.integration
@pytest.mark.slow
def test_pipeline_on_a_team_tracking_server(mlflow_server, postgres, prefect_server, tmp_path, monkeypatch):
    """The team set-up: the flow run reports to a real Prefect server, the MLflow run and the
    registry live on a real MLflow server on PostgreSQL, with basic auth: the pipeline logs in as a
    non-admin user, and a wrong password is refused."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    url, destination, admin_password = mlflow_server
    root, cwd = tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    secret = secrets.token_hex(8)  # MLflow's standard credentials: sent, but never in the config
    _create_worker_user(url, admin_password, secret)
    assert _status(url, WORKER_USER, secret) == 200
    assert _status(url, WORKER_USER, secret + "x") == 401
    assert _status(url, "admin", "replace-me") == 401
    assert _status(url) == 401
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_USERNAME": WORKER_USER,
        "MLFLOW_TRACKING_PASSWORD": secret,
    }
    prefect_url, _ = prefect_server
    env["PREFECT_API_URL"] = prefect_url
    done = subprocess.run(
        ["glasswork", "run", *tiny_overrides(root, "tracking=server", f"tracking.uri={url}")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Starting temporary server" not in done.stdout + done.stderr
    assert [r["state_type"] for r in flow_runs(prefect_url)] == ["COMPLETED"]
    registration = json.loads((root / "artifacts" / "register" / "registration.json").read_text())
    assert registration["promote"], registration

    # The pipeline ran as a user who may log and register, not manage: no admin, no user creation.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
    assert AuthServiceClient(url).get_user(WORKER_USER).is_admin is False
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", WORKER_USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret)
    with pytest.raises(MlflowException, match="failed with error code 403"):
        AuthServiceClient(url).create_user("intruder", secrets.token_hex(8))
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret + "x")
    with pytest.raises(MlflowException, match="failed with error code 401"):
        MlflowClient(tracking_uri=url).search_experiments()
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret)

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert [v.version for v in versions] == [registration["version"]]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == registration["version"]
    run = client.get_run(champion.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "glasswork"
    # The server's default location, proxied: not a path on this machine.
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    assert run.data.tags["glasswork.registered_version"] == f"{MODEL}/{champion.version}"
    config = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="config/resolved.yaml", tracking_uri=url, dst_path=str(tmp_path / "dl")
    )
    config_text = Path(config).read_text()
    assert f"uri: {url}" in config_text
    assert secret not in config_text and secret not in json.dumps(run.data.params)

    # The registry lives in PostgreSQL, in tables of MLflow's own role, which Prefect's cannot open.
    conn = postgres[1]()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT name, version FROM model_versions")
            assert cur.fetchall() == [(MODEL, int(champion.version))]
            cur.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
            assert cur.fetchall() == [("mlflow",)]
    finally:
        conn.close()
    roles = postgres[2]
    with pytest.raises(roles["driver"].OperationalError, match="permission denied for database"):
        roles["driver"].connect(host="127.0.0.1", port=roles["port"], user="prefect", password=roles["prefect"],
                                dbname="mlflow", connect_timeout=5)  # fmt: skip

    # The champion loads through the server (artifacts downloaded via its proxy) and predicts.
    with _tracking(url):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    texts = ["the film is wonderful and the story 12", "the script is dreadful and every scene 7"]
    predicted = model.predict(pd.DataFrame({"text": texts}))
    assert len(predicted) == 2 and predicted["label"].notna().all()
    probs = predicted[[c for c in predicted.columns if c.startswith("prob_")]]
    assert probs.shape[1] == 2 and ((probs.sum(axis=1) - 1).abs() < 1e-4).all()

    # Every artifact went to the server's destination; none to the run's folder, cwd or the repo.
    stored = {p.name for p in destination.rglob("*") if p.is_file()}
    assert {"MLmodel", "resolved.yaml", "labels.json", "model.safetensors", "attributions.html"} <= stored, stored
    assert any(run.info.run_id in str(p) for p in destination.rglob("*"))
    for folder in (root, cwd):
        assert not {"mlflow.db", "mlruns", "mlartifacts"} & {p.name for p in folder.iterdir()}
    for local in (REPO / "mlartifacts", REPO / "mlruns"):
        assert not local.is_dir() or not any(local.rglob(run.info.run_id))
