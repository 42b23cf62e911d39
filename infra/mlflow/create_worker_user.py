"""Create (or update) the MLflow user the workers and flow runs log as: not an admin.

    MLFLOW_TRACKING_URI=http://mlflow:5000 MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \
    GLASSWORK_WORKER_USERNAME=glasswork-worker GLASSWORK_WORKER_PASSWORD=... python infra/mlflow/create_worker_user.py

Run with the admin's credentials (compose runs it once, as the service ``mlflow-users``, before the
workers start). The worker may log runs to every experiment and register versions and move aliases
of every registered model (EDIT on ``*``), but it cannot manage users or permissions, delete what
others made or read the admin's password: a flow run that leaks its credentials leaks those only.
Running it again sets the password from the secret file (to rotate it) and keeps the user
non-admin.
"""

from __future__ import annotations

import os
import sys

from mlflow.exceptions import MlflowException, RestException
from mlflow.server.auth.client import AuthServiceClient

GRANTS = {"experiment": "EDIT", "registered_model": "EDIT"}
REQUIRED = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
            "GLASSWORK_WORKER_USERNAME", "GLASSWORK_WORKER_PASSWORD")  # fmt: skip


def ensure_worker_user(client: AuthServiceClient, username: str, password: str) -> None:
    """The non-admin user ``username`` with ``password`` and the grants above."""
    try:
        client.create_user(username, password)
    except RestException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_user_password(username, password)
    client.update_user_admin(username, False)
    for resource_type, permission in GRANTS.items():
        try:
            client.grant_user_permission(username, resource_type, "*", permission)
        except RestException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise


def main() -> int:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        print(f"create_worker_user: set {', '.join(missing)} (see the docstring)", file=sys.stderr)
        return 2
    username = os.environ["GLASSWORK_WORKER_USERNAME"]
    if username == os.environ["MLFLOW_TRACKING_USERNAME"]:
        print("create_worker_user: the worker's user must not be the admin", file=sys.stderr)
        return 2
    try:
        client = AuthServiceClient(os.environ["MLFLOW_TRACKING_URI"])  # logs in with MLFLOW_TRACKING_*
        ensure_worker_user(client, username, os.environ["GLASSWORK_WORKER_PASSWORD"])
    except MlflowException as err:
        print(f"create_worker_user: {err.message}", file=sys.stderr)
        return 1
    print(f"create_worker_user: {username} is a non-admin user with {GRANTS} on every resource")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
