"""Schedules: register Glasswork's deployments with a Prefect server.

    prefect server start                                          # or the team's server
    prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m pipelines.deploy tracking=server

* ``glasswork-training/train-weekly``: the training flow every Monday 03:00 UTC on the
  ``glasswork-gpu`` work pool (``trainer=gpu``).
* ``glasswork-monitoring/monitor-daily``: the monitoring flow every day 06:00 UTC on the
  ``glasswork-cpu`` pool, on the incoming folder (``monitor.incoming``).

With ``--alert-webhook URL`` it also creates the automation ``glasswork-drift-alert``: every
``glasswork.drift.detected`` event is posted to URL as ``{"text": ...}`` (the JSON a Slack,
Mattermost or Teams incoming webhook takes) through a Prefect ``Custom Webhook`` block.

The code is taken from this checkout (``flow.from_source`` on the repository folder), so a
worker on the same machine or a shared volume runs exactly this commit; for workers elsewhere,
build the image in ``infra/`` and point the pools there. Pools that do not exist yet are created
as ``process`` pools (a Kubernetes pool for GPUs is created from ``infra/k8s/`` instead).

Without a server to keep them it refuses: Prefect would otherwise start a temporary server, store
the schedules in it and stop it on exit, so nothing would ever run them. A run of a deployment
may change its config only within an allow-list (``pipelines/flow_parameters.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START_A_SERVER = (
    "start one and point Prefect at it:\n"
    "    prefect server start\n"
    "    prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api\n"
    "(or set PREFECT_API_URL to your team's server)"
)


class NoServer(RuntimeError):
    """No Prefect server would keep the deployments."""


def require_server() -> str:
    """The API URL of the Prefect server the deployments go to; raise ``NoServer`` when
    ``PREFECT_API_URL`` is unset (in the environment and the profile) or the server does not
    answer."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise NoServer(
            "PREFECT_API_URL is not set: the deployments would go to a temporary server that stops "
            f"when this command ends, and their schedules with it; {START_A_SERVER}"
        )
    with get_client(sync_client=True) as client:
        failure = client.api_healthcheck()
    if failure is not None:
        raise NoServer(f"the Prefect server at PREFECT_API_URL={url} does not answer ({failure}); {START_A_SERVER}")
    return url


@dataclass(frozen=True)
class Schedule:
    name: str
    entrypoint: str
    work_pool: str
    cron: str
    parameters: dict = field(default_factory=dict)
    description: str = ""


SCHEDULES = (
    Schedule(
        "train-weekly",
        "pipelines/training.py:scheduled_training",
        "glasswork-gpu",
        "0 3 * * 1",
        {"overrides": ["trainer=gpu"]},
        "Retrain on the current data version every Monday; register gates the champion.",
    ),
    Schedule(
        "monitor-daily",
        "pipelines/monitoring.py:monitoring",
        "glasswork-cpu",
        "0 6 * * *",
        {"batch": "data/incoming", "overrides": []},
        "Check the day's incoming batch with the champion; alert on drift.",
    ),
)


async def ensure_pool(name: str, pool_type: str = "process") -> None:
    """Create the work pool if the server does not have it yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))


ALERT_AUTOMATION = "glasswork-drift-alert"
ALERT_BLOCK = "glasswork-drift-webhook"
# Rendered by the Prefect server's actions service (Jinja) with the triggering event in scope.
ALERT_SUBJECT = "Glasswork: drift in {{ event.payload.batch }}"
ALERT_BODY = (
    "{{ event.resource.name }} sees drift in {{ event.payload.batch }}: "
    "{{ event.payload.drifted_signals | join(', ') }} drifted "
    "(share {{ '%.2f' | format(event.payload.share_drifted) }})"
    "{% if event.payload.estimated_accuracy is not none %}, estimated accuracy "
    "{{ '%.3f' | format(event.payload.estimated_accuracy) }}{% endif %}. "
    "Report: {{ event.payload.report }} (explanations: {{ event.payload.explanation_report }}; "
    "where the batch lands: {{ event.payload.embedding_map }}); "
    "MLflow run {{ event.payload.mlflow_run_id }}."
)


def alert_automation(webhook_url: str) -> str:
    """Create the webhook block and the automation that posts every drift alert to it (both
    replaced when they exist: deploying twice leaves one); return the automation's id."""
    from prefect import get_client
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import EventTrigger, Posture

    from pipelines.monitoring import ALERT_EVENT

    # The URL goes in the block's secrets (an incoming-webhook URL is a credential): the API and
    # UI show it masked, and the block fills it in when it posts.
    block = CustomWebhookNotificationBlock(
        name=ALERT_BLOCK,
        url="{{webhook_url}}",
        json_data={"text": "{{subject}}\n{{body}}"},
        secrets={"webhook_url": webhook_url},
    )
    block_id = block.save(ALERT_BLOCK, overwrite=True)
    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(name=ALERT_AUTOMATION):
            client.delete_automation(old.id)
    automation = Automation(
        name=ALERT_AUTOMATION,
        description="Post every Glasswork drift alert to the team's webhook.",
        trigger=EventTrigger(expect={ALERT_EVENT}, posture=Posture.Reactive, threshold=1),
        actions=[SendNotification(block_document_id=block_id, subject=ALERT_SUBJECT, body=ALERT_BODY)],
    ).create()
    return str(automation.id)


def deploy(
    only: list[str] | None = None,
    root: Path = REPO,
    pools: dict[str, str] | None = None,
    overrides: list[str] | None = None,
) -> list[str]:
    """Create the pools and register the deployments named in ``only`` (all by default); return
    their ids. ``pools`` renames work pools (e.g. to deploy the GPU schedule on a CPU pool);
    ``overrides`` are added to every deployment's config (e.g. ``tracking=server``)."""
    from prefect import flow
    from prefect.schedules import Cron

    ids = []
    for schedule in SCHEDULES:
        if only and schedule.name not in only:
            continue
        pool = (pools or {}).get(schedule.work_pool, schedule.work_pool)
        asyncio.run(ensure_pool(pool))
        source = flow.from_source(source=str(root), entrypoint=schedule.entrypoint)
        ids.append(
            str(
                source.deploy(
                    name=schedule.name,
                    work_pool_name=pool,
                    schedule=Cron(schedule.cron, timezone="UTC"),
                    parameters={
                        **schedule.parameters,
                        "overrides": [*schedule.parameters.get("overrides", []), *(overrides or [])],
                    },
                    description=schedule.description,
                    build=False,
                    push=False,
                    print_next_steps=False,
                )
            )
        )
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every deployment")
    parser.add_argument("--only", nargs="*", choices=[s.name for s in SCHEDULES], help="deploy only these")
    parser.add_argument("--pool", action="append", default=[], metavar="OLD=NEW", help="use work pool NEW for OLD")
    parser.add_argument(
        "--alert-webhook",
        metavar="URL",
        help=f"post every drift alert to URL (creates the automation {ALERT_AUTOMATION!r}; a Slack, Mattermost "
        "or Teams incoming-webhook URL, or any endpoint taking a JSON {'text': ...})",
    )
    args = parser.parse_args(argv)
    if args.alert_webhook and not args.alert_webhook.startswith(("http://", "https://")):
        parser.error(f"--alert-webhook {args.alert_webhook!r}: expected an http:// or https:// URL")
    pools = dict(p.split("=", 1) for p in args.pool)
    try:
        url = require_server()
    except NoServer as err:
        print(f"python -m pipelines.deploy: {err}", file=sys.stderr)
        return 1
    print(f"deploying to the Prefect server at {url}")
    for deployment_id in deploy(args.only, pools=pools, overrides=args.overrides):
        print(f"deployed {deployment_id}")
    if args.alert_webhook:
        print(f"automation {ALERT_AUTOMATION} {alert_automation(args.alert_webhook)}: drift alerts go to the webhook")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
