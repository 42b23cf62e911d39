"""What a run of a deployment may change in its config: an allow-list.

Whoever can start a flow run on the Prefect server can pass any ``overrides``. Those are applied
on a worker that holds the MLflow credentials and writes under its ``GLASSWORK_ROOT``, so a run
could send its results and the credentials to another tracking server (``tracking.uri=``), write
or delete outside the worker's folder (``paths.*``), or copy an environment variable into the
logged config (``${oc.env:MLFLOW_TRACKING_PASSWORD}``). A run may therefore only pick configs that
ship with the repository and tune the settings below; where things are read and written comes
from the deployment itself (``python -m pipelines.deploy KEY=VALUE``, trusted as whoever can
change a deployment) or from the worker's environment. Runs started outside a deployment (the
``glasswork`` CLI) are the user's own and are not limited.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from glasswork.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"

# Config groups a run may pick a shipped config of; not paths, tracking or data (where things are).
GROUPS = ("debug", "experiment", "model", "trainer", "explain", "drift", "monitor", "registry")
# Settings a run may set (and every one under these groups): how to train, explain, compare, gate.
SETTINGS = ("seed", "trainer", "model", "explain", "drift", "monitor", "registry")
# Locations among those groups: read from or written to, so the deployment's to set.
LOCATIONS = {"model.dir", "model.package", "drift.current_path", "monitor.output_dir", "monitor.incoming"}
_OVERRIDE = re.compile(r"(?P<key>[A-Za-z_][\w.]*)=(?P<value>.*)", re.DOTALL)
_NAME = re.compile(r"[\w-]+")


def refusal(override: str) -> str | None:
    """Why a flow run may not pass ``override`` (``None`` when it may)."""
    match = _OVERRIDE.fullmatch(override)
    if match is None:
        return "not a plain KEY=VALUE (no +, ++ or ~: a run may not add or delete settings)"
    key, value = match["key"], match["value"]
    if "${" in value:
        return "an interpolation (${...}) could copy the worker's environment into the logged config"
    if key in GROUPS:
        if _NAME.fullmatch(value) and (CONF / key / f"{value}.yaml").is_file():
            return None
        return f"no config {value!r} in conf/{key}/"
    if key in LOCATIONS or key.split(".")[0] in ("paths", "tracking", "data", "hydra"):
        return "a location: where things are read and written is the deployment's to set, not a run's"
    if key.split(".")[0] not in SETTINGS:
        return "not a setting a run may change"
    return None


def check_run_overrides(overrides: Iterable[str], deployed: Iterable[str] = ()) -> list[str]:
    """Return ``overrides`` when every one is either the deployment's own (``deployed``) or on the
    allow-list; raise ``ConfigError`` naming each refused one and the rule otherwise."""
    overrides, trusted = list(overrides), set(deployed)
    refused = {o: why for o in overrides if o not in trusted and (why := refusal(o)) is not None}
    if refused:
        lines = "\n".join(f"  {o}: {why}" for o, why in refused.items())
        raise ConfigError(
            f"flow-run parameter 'overrides' refused:\n{lines}\n"
            f"A run of a deployment may pick a config of {', '.join(GROUPS)} (a file in conf/<group>/) and set "
            f"settings under {', '.join(SETTINGS)}, except {', '.join(sorted(LOCATIONS))}. "
            "Put locations in the deployment (python -m pipelines.deploy KEY=VALUE) or the worker's environment "
            "(GLASSWORK_ROOT, MLFLOW_TRACKING_URI)."
        )
    return overrides


def deployment_run_overrides(overrides: list[str] | None) -> list[str]:
    """``overrides`` as a flow checks them: limited to the allow-list (beyond what the deployment
    itself sets) when the flow runs from a deployment, as given otherwise."""
    from prefect.runtime import deployment

    overrides = list(overrides or [])
    if deployment.id is None:
        return overrides
    from uuid import UUID

    from prefect import get_client

    with get_client(sync_client=True) as client:
        deployed = client.read_deployment(UUID(str(deployment.id))).parameters.get("overrides") or []
    return check_run_overrides(overrides, deployed)
