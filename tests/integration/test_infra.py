"""The team infrastructure in ``infra/``, checked offline against the schemas of what would run it.

Nothing here starts a container or a cluster. The Compose file is validated against the Compose
specification (the copy check-jsonschema vendors), every Kubernetes manifest against the Kubernetes
OpenAPI schemas kubernetes-validate ships (strict: an unknown field fails), the work pool's base job
template through Prefect's own templating, and our own rules on top: loopback-only ports, secrets as
files or Secret references, GPUs reserved. Each validator is also shown a broken file, so that none
of these checks can pass vacuously.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
COMPOSE = INFRA / "compose.yaml"
K8S = INFRA / "k8s"
K8S_FILES = [*sorted(K8S.glob("*.yaml")), K8S / "secret.yaml.example"]
WORK_POOL = K8S / "work-pools" / "gpu-work-pool.json"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

# The oldest Kubernetes the manifests are written for: a field added after it fails validation.
K8S_VERSION = "1.33.0"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|AUTH_STRING|API_KEY", re.IGNORECASE)
# scheme://user:password@host, unless the password is a ${VARIABLE} filled in at run time
INLINE_CREDENTIALS = re.compile(r"\w+://[^/\s:@]+:(?!\$+\{)[^@\s/]+@")


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _k8s_resources() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in K8S_FILES for doc in yaml.safe_load_all(path.read_text()) if doc]


def _k8s_params() -> list[Any]:
    return [pytest.param(doc, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}") for name, doc in _k8s_resources()]


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", "--output-format", "text", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment:`, a mapping or a list of KEY=VALUE."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return environment


def _published_host_ip(port: str | int | dict[str, Any]) -> str:
    """The host address of a `ports:` entry, short ("127.0.0.1:5000:5000") or long syntax."""
    if isinstance(port, dict):
        return port.get("host_ip", "0.0.0.0")
    parts = str(port).rsplit(":", 2)
    return parts[0] if len(parts) == 3 else "0.0.0.0"


# --- Compose ---------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    result = _check_compose(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validator_rejects_an_unknown_service_key(tmp_path: Path) -> None:
    broken = _compose()
    broken["services"]["mlflow"]["restrat"] = "always"
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = _check_compose(path)
    assert result.returncode == 1
    assert "'restrat' was unexpected" in result.stdout


def test_only_mlflow_and_prefect_publish_ports_and_only_on_loopback() -> None:
    services = _compose()["services"]
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert publishing == {"mlflow", "prefect-server"}
    for name in publishing:
        for port in services[name]["ports"]:
            assert _published_host_ip(port) == "127.0.0.1", f"{name} publishes {port} beyond this machine"


def test_postgres_is_reachable_from_the_servers_only() -> None:
    compose = _compose()
    postgres = compose["services"]["postgres"]
    assert "ports" not in postgres and "expose" not in postgres
    assert postgres["networks"] == ["backend"]
    assert compose["networks"]["backend"]["internal"] is True
    on_backend = {name for name, service in compose["services"].items() if "backend" in service.get("networks", [])}
    assert on_backend == {"postgres", "mlflow", "prefect-server"}


def test_secrets_are_files_kept_out_of_git_and_out_of_the_image() -> None:
    compose = _compose()
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, f"secret {name} must come from a file"
        path = (INFRA / secret["file"]).resolve()
        assert path.parent == INFRA / "secrets"
        assert path.with_name(path.name + ".example").is_file(), f"{name}: no .example beside it"
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"{path} is not ignored by git"
    dockerignore = (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
    assert "infra/secrets/*" in dockerignore


def test_no_secret_value_is_written_into_the_compose_file() -> None:
    text = COMPOSE.read_text()
    assert not INLINE_CREDENTIALS.search(text), INLINE_CREDENTIALS.search(text)
    for name, service in _compose()["services"].items():
        for variable, value in _environment(service).items():
            if SECRET_NAME.search(variable):
                assert variable.endswith("_FILE") and str(value).startswith("/run/secrets/"), (name, variable)
        for secret in service.get("secrets", []):
            target = secret if isinstance(secret, str) else secret.get("target", secret["source"])
            assert "/" not in target, f"{name}: {target} must land in /run/secrets/"


def test_inline_credential_rule_catches_a_password_in_a_url() -> None:
    assert INLINE_CREDENTIALS.search("postgresql://glasswork:hunter2@postgres:5432/mlflow")
    assert not INLINE_CREDENTIALS.search("postgresql+asyncpg://glasswork:$${PREFECT_API_DATABASE_PASSWORD}@postgres")
    assert not INLINE_CREDENTIALS.search("postgresql://glasswork@postgres:5432/mlflow")


def test_gpu_worker_reserves_nvidia_devices() -> None:
    worker = _compose()["services"]["worker-gpu"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert worker["command"][worker["command"].index("--pool") + 1] == "glasswork-gpu"
    assert "deploy" not in _compose()["services"]["worker-cpu"]


def test_services_start_after_their_dependencies_are_healthy() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)


# --- Kubernetes manifests ----------------------------------------------------------------------


@pytest.mark.parametrize("resource", _k8s_params())
def test_kubernetes_manifest_matches_the_kubernetes_schema(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_kubernetes_validator_rejects_a_misspelt_field() -> None:
    deployment = next(doc for _, doc in _k8s_resources() if doc["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["replica"] = broken["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_worker_pod_is_locked_down_and_reads_secrets_from_the_secret() -> None:
    deployment = next(doc for _, doc in _k8s_resources() if doc["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(container["resources"])
        for variable in container["env"]:
            if SECRET_NAME.search(variable["name"]):
                assert set(variable) == {"name", "valueFrom"} and "secretKeyRef" in variable["valueFrom"]


def test_the_secret_template_holds_placeholders_only() -> None:
    secret = next(doc for _, doc in _k8s_resources() if doc["kind"] == "Secret")
    assert "data" not in secret
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value or not SECRET_NAME.search(key.replace("-", "_")), key


def test_network_policies_allow_no_ingress_and_deny_by_default() -> None:
    policies = [doc for _, doc in _k8s_resources() if doc["kind"] == "NetworkPolicy"]
    default = next(p for p in policies if p["spec"]["podSelector"] == {})
    assert set(default["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not any(p["spec"].get("ingress") for p in policies)
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to") and rule.get("ports"), f"{policy['metadata']['name']}: egress without limits"


def test_worker_role_is_namespaced_and_cannot_read_secrets() -> None:
    kinds = {doc["kind"] for _, doc in _k8s_resources()}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    role = next(doc for _, doc in _k8s_resources() if doc["kind"] == "Role")
    for rule in role["rules"]:
        assert "secrets" not in rule["resources"] and "*" not in rule["resources"] + rule["verbs"]


# --- The work pool's base job template -------------------------------------------------------


@pytest.fixture(scope="module")
def work_pool() -> dict[str, Any]:
    return json.loads(WORK_POOL.read_text())


def _undeclared_placeholders(template: dict[str, Any]) -> set[str]:
    from prefect.utilities.templating import PlaceholderType, find_placeholders

    used = find_placeholders(json.dumps(template["job_configuration"]))
    names = {p.name for p in used if p.type is PlaceholderType.STANDARD}
    return names - set(template["variables"]["properties"])


def _render_job(template: dict[str, Any]) -> dict[str, Any]:
    """The Job the Kubernetes worker would submit for the variables' defaults.

    As prefect-kubernetes does (``KubernetesWorkerJobConfiguration.prepare_for_flow_run``):
    variables without a default drop their keys, ``env`` is prepended to the manifest's own
    entries, and the command becomes a list of arguments.
    """
    from prefect.utilities.templating import apply_values

    properties = template["variables"]["properties"]
    values = {name: p["default"] for name, p in properties.items() if p.get("default") is not None}
    values |= {"name": "glasswork-training", "command": "prefect flow-run execute"}
    job = apply_values(template["job_configuration"], values)["job_manifest"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in values["env"].items()] + container["env"]
    container["args"] = shlex.split(container["args"])
    return job


def test_work_pool_declares_every_variable_its_job_uses(work_pool: dict[str, Any]) -> None:
    assert set(work_pool) == {"job_configuration", "variables"}
    assert _undeclared_placeholders(work_pool) == set()
    broken = copy.deepcopy(work_pool)
    broken["job_configuration"]["job_manifest"]["spec"]["activeDeadlineSeconds"] = "{{ deadline }}"
    assert _undeclared_placeholders(broken) == {"deadline"}


def test_work_pool_job_is_a_valid_job_that_requests_a_gpu(work_pool: dict[str, Any]) -> None:
    job = _render_job(work_pool)
    pod = job["spec"]["template"]["spec"]
    # prefect-kubernetes refuses a template without these (its _get_base_job_manifest), although
    # parallelism and completions belong to the Job spec, not the pod's: the API server drops them
    # there with a warning. Strict validation would too, so they are checked here and removed.
    assert (pod.pop("parallelism"), pod.pop("completions"), pod["restartPolicy"]) == (1, 1, "Never")
    assert pod["containers"][0]["name"] == "prefect-job"
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1


def test_work_pool_job_fits_the_namespace_policies(work_pool: dict[str, Any]) -> None:
    job = _render_job(work_pool)
    pod = job["spec"]["template"]
    resources = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in _k8s_resources()}
    assert ("Namespace", job["metadata"]["namespace"]) in resources
    assert ("ServiceAccount", pod["spec"]["serviceAccountName"]) in resources
    flow_run_policy = resources[("NetworkPolicy", "glasswork-flow-run-egress")]
    assert flow_run_policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    for variable in pod["spec"]["containers"][0]["env"]:
        if SECRET_NAME.search(variable["name"]):
            assert "secretKeyRef" in variable["valueFrom"], variable["name"]
