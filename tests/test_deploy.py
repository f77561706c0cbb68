"""deploy/ and docs/operations.md checked against the gateway they describe.

The Kubernetes manifests are validated against the Kubernetes API schemas (kubernetes-validate
ships them, so this runs offline) and then against the gateway itself: the probes hit paths
the gateway serves, every environment variable is a setting the gateway reads, the route map
parses, the commands parse with the real command line. The compose file, the Dockerfile and the
systemd unit get the same treatment, since no container runtime is available to the tests.
"""

from __future__ import annotations

import argparse
import configparser
import ipaddress
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.fernet import Fernet, MultiFernet
from kubernetes_validate import utils as kubernetes_schemas  # type: ignore[import-untyped]
from prometheus_client.metrics import MetricWrapperBase

from auth import telemetry as auth_metrics
from auth.sessions.cookies import CookieKeyError, parse_keys
from gateway.app import create_app
from gateway.cli.main import build_parser
from gateway.config.reload import RouteMap
from gateway.config.routes import RouteTable
from gateway.config.routes_file import load_routes, parse_routes
from gateway.config.settings import SETTINGS, Settings
from gateway.demo import serve_backends
from gateway.ops import health
from gateway.ops import metrics as gateway_metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
SETTING_NAMES = frozenset(setting.env for setting in SETTINGS)
SECRET_SETTINGS = frozenset(setting.env for setting in SETTINGS if setting.secret)
DEFAULT_SHUTDOWN_GRACE = float(
    next(s.default for s in SETTINGS if s.env == "GATEWAY_SHUTDOWN_GRACE")
)
# The oldest Kubernetes the manifests claim (the preStop sleep action is on by default from
# 1.30) and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_schemas.latest_version())

Manifest = dict[str, Any]


# --- reading the files ---------------------------------------------------------------------


def manifests() -> list[tuple[str, Manifest]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                found.append((path.name, document))
    return found


def one(kind: str, name: str | None = None) -> Manifest:
    matches = [
        doc
        for _, doc in manifests()
        if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Manifest) -> Manifest:
    [only] = pod_spec(workload)["containers"]
    return dict(only)


def cli(argv: list[str]) -> argparse.Namespace:
    """Parse a command line with the gateway's own parser (a bad flag fails the test)."""
    return build_parser().parse_args(argv)


def deployment_args() -> argparse.Namespace:
    return cli(container(one("Deployment"))["args"])


def env_names(spec: Manifest) -> set[str]:
    """Every environment variable a container gets, envFrom sources read out."""
    names = {entry["name"] for entry in spec.get("env", ())}
    for source in spec.get("envFrom", ()):
        if "configMapRef" in source:
            names |= set(one("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            names |= secret_keys(one("Secret", source["secretRef"]["name"]))
    return names


def secret_keys(secret: Manifest) -> set[str]:
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def settings_data() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap", "library-gateway-settings")["data"]
    return data


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def exec_form(arguments: str) -> list[str]:
    words: list[str] = json.loads(arguments)
    return words


def compose() -> Manifest:
    data: Manifest = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return data


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?message}, for the values given."""

    def one_variable(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if name in variables:
            return variables[name]
        if operator == ":-":
            return rest
        raise AssertionError(f"${{{name}}} has no value and no default")

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:[-?])([^}]*))?\}", one_variable, value)


def gateway_services() -> dict[str, Manifest]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("command", [None])[0] == "run"
    }


def compose_mount(service: Manifest, target: str) -> Path:
    """The host directory (relative to deploy/) a service mounts at `target`."""
    for volume in service["volumes"]:
        source, mounted, *_ = str(volume).split(":")
        if mounted == target:
            return DEPLOY / source
    raise AssertionError(f"nothing is mounted at {target}")


def caddyfile() -> str:
    return (DEPLOY / "compose" / "caddy" / "Caddyfile").read_text(encoding="utf-8")


def systemd_unit() -> configparser.ConfigParser:
    # systemd allows a key more than once (SystemCallFilter); strict=False keeps the last.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "systemd" / "library-gateway.service", encoding="utf-8")
    return parser


def gateway_app_paths(table: RouteTable) -> dict[str, set[object]]:
    """The gateway's own paths and their handlers, from the real app (nothing is started)."""
    app = create_app(
        Settings.from_env({}),
        RouteMap(table),
        database_url="postgresql://unused",
        cookie_keys=MultiFernet([Fernet(Fernet.generate_key())]),
    )
    return {
        resource.canonical: {route.handler for route in resource}
        for resource in app.router.resources()
    }


# --- Kubernetes ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "name_and_manifest", manifests(), ids=lambda item: f"{item[0]}:{item[1]['kind']}"
)
def test_every_manifest_is_valid_against_the_kubernetes_schema(
    name_and_manifest: tuple[str, Manifest], version: str
) -> None:
    _name, manifest = name_and_manifest
    # strict: an unknown (say, misspelt) field is an error, as kubectl's server-side check is.
    kubernetes_schemas.validate(manifest, version, strict=True)


def test_the_kustomization_applies_every_manifest_once() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text("utf-8"))
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    files = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resources) == files
    kinds = {doc["kind"] for _, doc in manifests()}
    assert kinds == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Job",
    }
    # The image override names the image both workloads use.
    images = {container(one("Deployment"))["image"], container(one("Job"))["image"]}
    assert images == {entry["name"] for entry in kustomization["images"]}


def test_the_deployment_runs_one_gateway_per_pod_listening_for_the_service() -> None:
    args = deployment_args()
    assert args.command == "run"
    assert args.host == "0.0.0.0"
    assert args.workers == 1
    ports = {port["name"]: port["containerPort"] for port in container(one("Deployment"))["ports"]}
    assert ports == {"http": args.port}
    service = one("Service")
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    # The autoscaler owns the replica count; an apply must not reset it.
    assert "replicas" not in one("Deployment")["spec"]


def test_the_probes_ask_for_paths_the_gateway_serves_on_its_port() -> None:
    spec = container(one("Deployment"))
    probes = {
        kind: spec[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["startupProbe"]["path"] == "/healthz"
    assert {probe["port"] for probe in probes.values()} == {"http"}
    served = gateway_app_paths(
        parse_routes(one("ConfigMap", "library-gateway-routes")["data"]["routes.yaml"])
    )
    assert served["/readyz"] == {health.readyz}
    assert served["/healthz"] == {health.healthz}


def test_selectors_match_the_gateway_pods_and_only_them() -> None:
    deployment = one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(one("Service")["spec"]["selector"], pod_labels)
    assert selects(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    for constraint in pod_spec(deployment)["topologySpreadConstraints"]:
        assert selects(constraint["labelSelector"]["matchLabels"], pod_labels)
    # The migration Job's pod must not receive the gateway's traffic or count in its budget.
    job_labels = one("Job")["spec"]["template"]["metadata"]["labels"]
    assert not selects(one("Service")["spec"]["selector"], job_labels)
    assert not selects(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"], job_labels)


def test_the_autoscaler_and_disruption_budget_leave_a_pod_serving_during_a_drain() -> None:
    autoscaler = one("HorizontalPodAutoscaler")["spec"]
    assert autoscaler["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": one("Deployment")["metadata"]["name"],
    }
    assert autoscaler["minReplicas"] >= 2
    budget = one("PodDisruptionBudget")["spec"]
    minimum = autoscaler["minReplicas"]
    allowed = budget.get("maxUnavailable", minimum - budget.get("minAvailable", 0))
    # At least one pod may be evicted (or a drain blocks), and at least one keeps serving.
    assert 1 <= allowed < minimum
    # Each pod holds up to 11 connections (pool of 10 + LISTEN): stay under PostgreSQL's 100.
    assert autoscaler["maxReplicas"] * 11 < 100


def test_the_routes_config_map_is_a_valid_map_mounted_where_the_gateway_reads_it() -> None:
    config_map = one("ConfigMap", "library-gateway-routes")
    table = parse_routes(config_map["data"]["routes.yaml"], "configmap-routes.yaml")
    assert len(table.routes) >= 1
    routes_path = PurePosixPath(str(deployment_args().routes))
    volume = next(
        v
        for v in pod_spec(one("Deployment"))["volumes"]
        if v.get("configMap", {}).get("name") == "library-gateway-routes"
    )
    [mount] = [
        m for m in container(one("Deployment"))["volumeMounts"] if m["name"] == volume["name"]
    ]
    # A whole-directory mount: with subPath the kubelet never updates the file, and the
    # gateway's reload on change would never fire.
    assert "subPath" not in mount
    assert mount["mountPath"] == str(routes_path.parent)
    assert routes_path.name in config_map["data"]


def test_every_environment_variable_in_the_manifests_is_a_gateway_setting() -> None:
    for workload in (one("Deployment"), one("Job")):
        names = env_names(container(workload))
        assert names, workload["kind"]
        assert names <= SETTING_NAMES, names - SETTING_NAMES
    for entry in container(one("Job")).get("env", ()):
        reference = entry["valueFrom"]["secretKeyRef"]
        assert reference["key"] in secret_keys(one("Secret", reference["name"]))


def test_secrets_live_in_the_secret_and_plain_settings_in_the_config_map() -> None:
    keys = secret_keys(one("Secret"))
    assert {"GATEWAY_COOKIE_KEYS", "GATEWAY_DATABASE_URL"} <= keys
    assert keys <= SECRET_SETTINGS
    data = settings_data()
    assert set(data) <= SETTING_NAMES - SECRET_SETTINGS
    settings = Settings.from_env(data)  # every value is one the gateway accepts
    assert settings.https
    assert settings.trusted_proxies, "behind an ingress the client address needs the proxies"


def test_the_placeholder_cookie_key_is_refused_so_a_forgotten_secret_fails_closed() -> None:
    placeholder = one("Secret")["stringData"]["GATEWAY_COOKIE_KEYS"]
    with pytest.raises(CookieKeyError):
        parse_keys(placeholder)


def test_pods_run_as_non_root_with_a_read_only_root_and_only_the_data_dir_writable() -> None:
    user = next(rest for keyword, rest in final_stage() if keyword == "USER").split(":")[0]
    for workload in (one("Deployment"), one("Job")):
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == user != "0"
        assert pod["automountServiceAccountToken"] is False
        spec = container(workload)
        assert spec["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert {"cpu", "memory"} <= set(spec["resources"]["requests"])
        assert "memory" in spec["resources"]["limits"]
    writable = {
        m["mountPath"]
        for m in container(one("Deployment"))["volumeMounts"]
        if not m.get("readOnly")
    }
    assert str(deployment_args().data_dir) in writable


def test_termination_outlasts_the_prestop_sleep_plus_the_shutdown_grace() -> None:
    deployment = one("Deployment")
    grace = float(settings_data().get("GATEWAY_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE))
    sleep = container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sleep > 0
    # Kubernetes counts the grace period from the start of preStop, so both must fit in it.
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > sleep + grace


def test_the_migration_job_only_migrates_with_only_the_database_url() -> None:
    job = one("Job")
    assert cli(container(job)["args"]).command == "migrate"
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    # Least privilege: migrating needs no cookie key.
    assert env_names(container(job)) == {"GATEWAY_DATABASE_URL"}


# --- compose -------------------------------------------------------------------------------


def test_compose_runs_two_replicas_on_one_postgres_with_the_same_keys() -> None:
    services = compose()["services"]
    replicas = gateway_services()
    assert len(replicas) == 2
    environments = [service["environment"] for service in replicas.values()]
    assert environments[0] == environments[1]
    environment = environments[0]
    assert set(environment) <= SETTING_NAMES, set(environment) - SETTING_NAMES
    database = urlsplit(
        interpolate(environment["GATEWAY_DATABASE_URL"], {"POSTGRES_PASSWORD": "x"})
    )
    assert services[database.hostname or ""]["image"] == "postgres:16"
    assert database.path == "/" + services["postgres"]["environment"]["POSTGRES_DB"]
    for name, service in replicas.items():
        args = cli(service["command"])
        assert (args.host, args.workers) == ("0.0.0.0", 1), name
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert compose_mount(service, str(args.data_dir)) is not None
    assert cli(services["migrate"]["command"]).command == "migrate"


def test_compose_refuses_to_start_without_the_secrets() -> None:
    environment = next(iter(gateway_services().values()))["environment"]
    # ${NAME:?…}: compose stops with the message instead of starting replicas that would
    # each invent a cookie key of their own.
    assert re.fullmatch(r"\$\{GATEWAY_COOKIE_KEYS:\?[^}]+\}", environment["GATEWAY_COOKIE_KEYS"])
    assert "${POSTGRES_PASSWORD:?" in environment["GATEWAY_DATABASE_URL"]


def test_compose_settings_parse_and_trust_only_the_tls_proxy() -> None:
    services = compose()["services"]
    environment = next(iter(gateway_services().values()))["environment"]
    values = {
        name: interpolate(
            str(value),
            {"POSTGRES_PASSWORD": "x", "GATEWAY_COOKIE_KEYS": Fernet.generate_key().decode()},
        )
        for name, value in environment.items()
    }
    settings = Settings.from_env(values)
    assert settings.https
    proxy_address = ipaddress.ip_address(services["proxy"]["networks"]["library"]["ipv4_address"])
    assert settings.trusted_proxies == (ipaddress.ip_network(proxy_address),)
    subnet = compose()["networks"]["library"]["ipam"]["config"][0]["subnet"]
    assert proxy_address in ipaddress.ip_network(subnet)
    for service in gateway_services().values():
        stop = float(service["stop_grace_period"].rstrip("s"))
        assert stop > settings.shutdown_grace


def test_compose_routes_point_at_the_demo_backends_container() -> None:
    services = compose()["services"]
    backends = serve_backends.build_parser().parse_args(services["backends"]["command"])
    assert services["backends"]["entrypoint"] == ["python", "-m", "gateway.demo.serve_backends"]
    assert backends.host == "0.0.0.0"
    for service in gateway_services().values():
        routes = cli(service["command"]).routes
        folder = compose_mount(service, str(routes.parent))
        table = load_routes(folder / routes.name)
        served = {("backends", getattr(backends, name)) for name in serve_backends.DEFAULT_PORTS}
        assert {(route.backend.host, route.backend.port) for route in table.routes} == served


def test_caddy_terminates_tls_for_the_public_url_and_balances_over_both_replicas() -> None:
    services = compose()["services"]
    public = urlsplit(next(iter(gateway_services().values()))["environment"]["GATEWAY_PUBLIC_URL"])
    text = caddyfile()
    assert re.search(rf"^https://{re.escape(public.netloc)} \{{", text, re.M)
    assert f"{public.port}:{public.port}" in services["proxy"]["ports"]
    upstream = re.search(r"^\s*reverse_proxy ([^{]+)\{", text, re.M)
    assert upstream is not None
    expected = {
        f"{name}:{cli(service['command']).port}" for name, service in gateway_services().items()
    }
    assert set(upstream.group(1).split()) == expected
    assert re.search(r"^\s*health_uri /readyz$", text, re.M)
    assert compose_mount(services["proxy"], "/etc/caddy") == DEPLOY / "compose" / "caddy"


# --- Dockerfile ----------------------------------------------------------------------------


def test_the_image_is_built_in_two_stages_and_runs_as_a_non_root_user() -> None:
    steps = dockerfile()
    stages = [rest for keyword, rest in steps if keyword == "FROM"]
    assert stages[0] == "python:3.11-slim AS builder"
    assert stages[-1].startswith("python:3.11-slim")
    assert len(stages) == 2
    final = final_stage()
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the runtime stage has no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    # Only the built virtualenv crosses from the builder.
    copies_from = [
        rest for keyword, rest in final if keyword == "COPY" and rest.startswith("--from=")
    ]
    assert copies_from == ["--from=builder /opt/library-gateway /opt/library-gateway"]


def test_the_image_runs_the_gateway_with_a_healthcheck_on_healthz() -> None:
    final = dict(final_stage())
    command = exec_form(final["ENTRYPOINT"]) + exec_form(final["CMD"])
    assert command[0] == "library-gateway"
    args = cli(command[1:])
    assert args.command == "run"
    assert str(args.routes) == "/etc/library-gateway/routes.yaml"
    assert args.host == "0.0.0.0"
    assert final["EXPOSE"] == str(args.port)
    assert exec_form(final["VOLUME"]) == [str(args.data_dir)]
    check = final["HEALTHCHECK"]
    assert f"http://127.0.0.1:{args.port}/healthz" in check
    options, _, probe = check.partition("CMD ")
    assert "--interval=" in options
    assert exec_form(probe)[0] == "python"


def test_the_image_copies_only_what_exists_and_the_dockerignore_lets_through() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = []
    for keyword, rest in dockerfile():
        if keyword == "COPY" and not rest.startswith("--from="):
            *parts, _target = shlex.split(rest)
            sources += parts
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, f"{source} is excluded from the build context"
    # The route map baked into the image is a valid one.
    assert load_routes(ROOT / "routes.yaml").routes


# --- systemd -------------------------------------------------------------------------------


def test_the_systemd_unit_runs_the_gateway_hardened() -> None:
    unit = systemd_unit()
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/library-gateway")
    args = cli(command[1:])
    assert args.command == "run"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictSUIDSGID": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service.get(key) == value, key
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    # ProtectSystem=strict makes everything read-only but what is listed here.
    assert str(args.data_dir) in service["ReadWritePaths"].split()
    assert service["EnvironmentFile"].lstrip("-").startswith("/etc/library-gateway/")
    assert shlex.split(service["ExecReload"])[1:] == ["-HUP", "$MAINPID"]
    assert float(service["TimeoutStopSec"]) > DEFAULT_SHUTDOWN_GRACE
    assert unit["Install"]["WantedBy"] == "multi-user.target"


# --- docs/operations.md --------------------------------------------------------------------


def settings_table() -> str:
    rows = ["| variable | meaning | default |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        default = f"`{setting.default}`" if setting.default else "(unset)"
        secret = " (secret)" if setting.secret else ""
        rows.append(f"| `{setting.env}` | {setting.help}{secret} | {default} |")
    return "\n".join(rows) + "\n"


def operations() -> str:
    return (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def test_the_operations_settings_table_is_the_one_generated_from_settings() -> None:
    assert settings_table() in operations(), (
        "docs/operations.md's settings table is out of date; paste this:\n" + settings_table()
    )


def test_the_operations_guide_names_every_metric() -> None:
    names = set()
    for module in (gateway_metrics, auth_metrics):
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                suffix = "_total" if value._type == "counter" else ""
                names.add(value._name + suffix)
    assert len(names) >= 11
    listed = set(re.findall(r"^\| `(gateway_[a-z_]+)` \|", operations(), re.M))
    assert listed == names


def test_the_operations_guide_points_to_the_capacity_figures() -> None:
    sections = re.split(r"^## ", operations(), flags=re.M)
    [capacity] = [section for section in sections if section.startswith("Capacity\n")]
    assert "docs/performance.md" in capacity


# --- the demo services on their own (what compose runs in the `backends` container) --------


@pytest.fixture
def demo_backends() -> Iterator[tuple[subprocess.Popen[str], dict[str, int]]]:
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.demo.serve_backends",
            "--catalogue",
            "0",
            "--reservations",
            "0",
            "--digital",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # blocks until all three listen
            ports = {name: int(port) for name, port in re.findall(r"(\w+)=(\d+)", line)}
            yield process, ports
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(30)


@pytest.mark.slow
def test_the_demo_services_run_alone_on_the_ports_asked_for_and_stop_on_sigterm(
    demo_backends: tuple[subprocess.Popen[str], dict[str, int]],
) -> None:
    process, ports = demo_backends
    assert set(ports) == set(serve_backends.DEFAULT_PORTS)
    for name, path in (
        ("catalogue", "/catalogue/"),
        ("reservations", "/reservations/opening-hours"),
        ("digital", "/digital/"),
    ):
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[name]}{path}", timeout=30) as resp:
            assert resp.status == 200
            assert "text/html" in resp.headers["Content-Type"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
