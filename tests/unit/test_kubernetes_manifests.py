"""deploy/kubernetes: every manifest validates offline against the Kubernetes schemas, and
the manifests agree with the processes they run: settings that parse, ports and probes on
the real endpoints, a grace period longer than a drain, private admin and xDS ports, and
the autoscaler that `wsfleet capacity` prints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sidecar.main import DRAIN_OVERRUN_S
from wsfleet.settings import ApiSettings, BackendSettings, SidecarSettings, XdsSettings
from wsfleet.settings_flags import ENV_PREFIX, env_name, from_args
from wsfleet_tools.capacity import Measured, hpa_manifest, plan
from wsfleet_tools.cli import build_parser
from wsfleet_tools.edge_shutdown import SHUTDOWN_PATH, DrainTimes, EdgeShutdownSettings
from xds_server.policy_loader import parse_policy

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES = "1.37"
CUSTOM = ("monitoring.coreos.com/",)  # CRDs: no schema in kubernetes-validate
DOWNWARD_API = {  # what the cluster fills in, for the settings check
    "metadata.name": "gateways-5d8f9-abcde",
    "status.podIP": "10.1.2.3",
}
SECRETS = {("wsfleet-redis", "url"): "redis://:secret@redis:6379/0"}
SETTINGS = {
    "sidecar": SidecarSettings,
    "xds": XdsSettings,
    "backend": BackendSettings,
    "api": ApiSettings,
    "edge-shutdown-manager": EdgeShutdownSettings,
}


def documents(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every resource a kustomization lists, with the file it is in."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            yield from documents(path)
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def base() -> list[dict[str, Any]]:
    return [document for _, document in documents(ROOT / "base")]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in base() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def container(deployment: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The pod's one container, or the one named ``name``."""
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (found,) = containers if name is None else [c for c in containers if c["name"] == name]
    return found


def config_map(name: str, resources: list[dict[str, Any]] | None = None) -> dict[str, str]:
    (found,) = [
        d["data"]
        for d in (base() if resources is None else resources)
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name
    ]
    return dict(found)


def settings_of(deployment: dict[str, Any], name: str | None = None) -> Any:
    """The settings the container's process starts with: its args and its environment."""
    spec = container(deployment, name)
    environ = {}
    for source in spec.get("envFrom", []):
        environ.update(config_map(source["configMapRef"]["name"]))
    for variable in spec.get("env", []):
        if "value" in variable:
            environ[variable["name"]] = variable["value"]
        elif "fieldRef" in variable["valueFrom"]:
            environ[variable["name"]] = DOWNWARD_API[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            environ[variable["name"]] = SECRETS[(ref["name"], ref["key"])]
    command = spec["args"][0]
    cls = SETTINGS[command]
    known = {env_name(field) for field in cls.__dataclass_fields__.values()}
    unknown = {name for name in environ if name.startswith(ENV_PREFIX)} - known
    assert not unknown, f"{deployment['metadata']['name']}: no such setting {unknown}"
    return from_args(cls, build_parser().parse_args(spec["args"]), environ=environ)


def port_named(spec: dict[str, Any], name: str) -> int:
    (number,) = [p["containerPort"] for p in spec["ports"] if p["name"] == name]
    return int(number)


@pytest.mark.parametrize("directory", ["base", "overlays/region-5m"])
def test_every_manifest_validates_against_the_kubernetes_schemas(directory: str) -> None:
    found = [
        document
        for path in sorted((ROOT / directory).glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for document in yaml.safe_load_all(path.read_text())
    ]
    built_in = [d for d in found if not d["apiVersion"].startswith(CUSTOM)]
    assert built_in
    for document in built_in:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_a_broken_manifest_is_refused() -> None:
    gateways = one("Deployment", "gateways")
    gateways["spec"]["replicas"] = "six"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(gateways, KUBERNETES, strict=True)


def test_every_process_starts_from_settings_it_knows() -> None:
    sidecar = settings_of(one("Deployment", "gateways"))
    assert sidecar.pod_id == DOWNWARD_API["metadata.name"]
    assert sidecar.advertise_host == DOWNWARD_API["status.podIP"]
    assert sidecar.backends == ("backend:50051",)
    xds = settings_of(one("Deployment", "xds-server"))
    assert xds.tls_dir is not None and xds.registry_key_file is not None  # mTLS, signed pods
    backend = settings_of(one("Deployment", "backend"))
    assert backend.port == port_named(container(one("Deployment", "backend")), "bridge")


def test_gateways_get_longer_to_stop_than_their_drain_takes() -> None:
    gateways = one("Deployment", "gateways")
    settings = settings_of(gateways)
    grace = gateways["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.drain_budget_s + DRAIN_OVERRUN_S + settings.shutdown_timeout_s
    pre_stop = " ".join(container(gateways)["lifecycle"]["preStop"]["exec"]["command"])
    assert f"127.0.0.1:{settings.admin_port}/drain" in pre_stop
    assert "WSFLEET_DRAIN_BUDGET_S" in pre_stop


def test_probes_and_ports_are_the_processes_real_endpoints() -> None:
    gateways = one("Deployment", "gateways")
    spec, settings = container(gateways), settings_of(gateways)
    assert port_named(spec, "clients") == settings.port
    assert port_named(spec, "admin") == settings.admin_port
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}

    xds_deployment = one("Deployment", "xds-server")
    xds = settings_of(xds_deployment)
    assert port_named(container(xds_deployment), "xds") == xds.grpc_port
    assert port_named(container(xds_deployment), "admin") == xds.admin_port
    service = one("Service", "xds-server")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "xds": xds.grpc_port,
        "admin": xds.admin_port,
    }

    policy = parse_policy(one("ConfigMap", "wsfleet-policy")["data"]["policy.yaml"], "policy")
    envoy = one("Deployment", "envoy-zone-a")
    args = build_parser().parse_args(container(envoy, "envoy")["args"])
    assert (args.xds_host, args.xds_port) == ("xds-server", xds.grpc_port)
    assert args.admin_host == "127.0.0.1"  # Envoy's admin API never leaves the pod
    assert port_named(container(envoy, "envoy"), "public") == policy.listeners[0].port
    assert policy.listeners[0].address == "0.0.0.0"  # reachable from the Service
    assert str(xds.policy_path).startswith(
        container(xds_deployment)["volumeMounts"][0]["mountPath"]
    )


def test_admin_and_xds_ports_are_private() -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in base() if d["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}

    def allowed(policy: str) -> dict[int, list[dict[str, Any]]]:
        rules = policies[policy]["ingress"]
        return {rule["ports"][0]["port"]: rule.get("from", []) for rule in rules}

    envoy = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy"}}}]
    xds = settings_of(one("Deployment", "xds-server"))
    sidecar = settings_of(one("Deployment", "gateways"))
    assert allowed("xds-server")[xds.grpc_port] == envoy
    assert allowed("xds-server")[xds.admin_port] != []  # operators only, not everyone
    assert allowed("gateways")[sidecar.port] == envoy
    admin_from = allowed("gateways")[sidecar.admin_port]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "xds-server"}}} in admin_from
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    # the only port open to everyone; Envoy's stats only to Prometheus
    assert allowed("envoy-public") == {8080: [], 9902: [monitoring]}
    # the control plane's admin API: operators, the Envoy pods' shutdown managers, Prometheus
    assert allowed("xds-server")[xds.admin_port] == [
        {"podSelector": {"matchLabels": {"wsfleet.dev/operator": "true"}}},
        *envoy,
        monitoring,
    ]


def test_the_control_plane_is_replicated_and_every_tier_has_a_disruption_budget() -> None:
    assert one("Deployment", "xds-server")["spec"]["replicas"] >= 2
    budgets = {d["metadata"]["name"] for d in base() if d["kind"] == "PodDisruptionBudget"}
    assert budgets == {"xds-server", "envoy", "gateways", "server-api"}
    assert one("Deployment", "server-api")["spec"]["replicas"] >= 2  # no single point of failure


@pytest.mark.parametrize(
    ("path", "connections"),
    [("base/gateways-hpa.yaml", 500_000), ("overlays/region-5m/gateways-hpa.yaml", 5_000_000)],
)
def test_the_autoscaler_is_what_wsfleet_capacity_prints(path: str, connections: int) -> None:
    printed = yaml.safe_load(hpa_manifest(plan(connections, Measured())))
    assert yaml.safe_load((ROOT / path).read_text()) == printed
    # the plan's pods are the Deployment's pods: 2 GiB each
    limit = container(one("Deployment", "gateways"))["resources"]["limits"]["memory"]
    assert limit == "2Gi" == f"{plan(connections, Measured()).pod_memory_gib:g}Gi"


def test_the_service_monitor_scrapes_the_gateways_admin_port() -> None:
    monitor = one("ServiceMonitor", "gateways")["spec"]
    service = one("Service", "gateways-metrics")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["endpoints"]] == [
        p["name"] for p in service["spec"]["ports"]
    ]
    assert monitor["endpoints"][0]["path"] == "/metrics"


def test_the_region_overlay_adds_a_zone_of_envoys_with_its_own_identity() -> None:
    overlay = ROOT / "overlays" / "region-5m"
    resources = [document for _, document in documents(overlay)]  # the base, and its own
    envoys = [
        d for d in resources if d["kind"] == "Deployment" and "envoy" in d["metadata"]["name"]
    ]
    identities = set()
    for envoy in envoys:
        (tls,) = [v for v in envoy["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
        identities.add((envoy["metadata"]["name"], tls["secret"]["secretName"]))
    assert identities == {
        ("envoy-zone-a", "wsfleet-envoy-tls"),
        ("envoy-zone-b", "wsfleet-envoy-tls-b"),
    }
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    patched = {p.get("path") or p["target"]["name"] for p in kustomization["patches"]}
    assert patched == {"gateways-hpa.yaml", "gateways"}
    assert {d["metadata"]["name"] for d in resources if d["kind"] == "Deployment"} >= {"gateways"}


def test_the_server_api_is_routed_reached_only_through_envoy_and_scraped() -> None:
    deployment = one("Deployment", "server-api")
    spec, settings = container(deployment), settings_of(deployment)
    assert port_named(spec, "api") == settings.port
    assert port_named(spec, "admin") == settings.admin_port
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    mounts = {m["mountPath"] for m in spec["volumeMounts"]}
    assert str(settings.api_keys_file.parent) in mounts
    policy = parse_policy(one("ConfigMap", "wsfleet-policy")["data"]["policy.yaml"], "policy")
    [route] = [r for r in policy.routes if r.path_prefix == "/api/"]
    assert policy.pool(route.pool).name == settings.pool
    rules = one("NetworkPolicy", "server-api")["spec"]["ingress"]
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in rules}
    envoy = [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy"}}}]
    assert by_port[settings.port] == envoy and settings.admin_port in by_port
    monitor = one("ServiceMonitor", "server-api")["spec"]
    labels = one("Service", "server-api-metrics")["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()


HARDENED = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize("directory", ["base", "overlays/region-5m"])
def test_every_container_runs_unprivileged_on_a_read_only_root(directory: str) -> None:
    workloads = [d for _, d in documents(ROOT / directory) if d["kind"] == "Deployment"]
    assert workloads
    for deployment in workloads:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for spec in [*pod.get("initContainers", []), *pod["containers"]]:
            context = spec["securityContext"]
            assert {k: context.get(k) for k in HARDENED} == HARDENED, spec["name"]
            assert context["runAsUser"] > 0, spec["name"]
        writable = {m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
        assert "/tmp" in writable, deployment["metadata"]["name"]  # an emptyDir, not the image


def _secret_keys(pod: dict[str, Any], spec: dict[str, Any]) -> set[str]:
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    keys: set[str] = set()
    for mount in spec.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is not None:
            items = secret.get("items", [{"key": "<every key>"}])
            keys |= {f"{secret['secretName']}/{item['key']}" for item in items}
    return keys


def test_pods_mount_their_own_key_and_no_fleet_secret() -> None:
    for name in ("gateways", "server-api"):
        deployment = one("Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        settings = settings_of(deployment)
        fleet_keys = {k for k in _secret_keys(pod, container(deployment)) if "wsfleet-keys/" in k}
        assert fleet_keys <= {"wsfleet-keys/auth.key"}, name  # no registry.key, no admin.token
        assert settings.admin_token_file is None  # the operators' token stays with them
        (init,) = pod["initContainers"]
        assert _secret_keys(pod, init) == {"wsfleet-keys/registry.key"}
        args = build_parser().parse_args(init["args"])
        assert args.out == settings.registry_key_file  # the pod key it derives, from the pod
        assert args.pod_key == "$(WSFLEET_POD_ID)"
    pre_stop = " ".join(
        container(one("Deployment", "gateways"))["lifecycle"]["preStop"]["exec"]["command"]
    )
    assert "admin.token" not in pre_stop and "read_pod_key" in pre_stop


def _envoys(directory: str) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    resources = [d for _, d in documents(ROOT / directory)]
    envoys = [
        d
        for d in resources
        if d["kind"] == "Deployment"
        and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "envoy"
    ]
    assert envoys
    return [(envoy, resources) for envoy in envoys]


def _pre_stop(spec: dict[str, Any]) -> str:
    return " ".join(spec["lifecycle"]["preStop"]["exec"]["command"])


@pytest.mark.parametrize("directory", ["base", "overlays/region-5m"])
def test_an_envoy_pod_is_drained_through_the_control_plane_before_it_stops(
    directory: str,
) -> None:
    for envoy, resources in _envoys(directory):
        name = envoy["metadata"]["name"]
        pod = envoy["spec"]["template"]["spec"]
        proxy, manager = container(envoy, "envoy"), container(envoy, "shutdown-manager")
        settings = settings_of(envoy, "shutdown-manager")
        # the drain names this pod's Envoy: its xDS node id is the pod name
        args = build_parser().parse_args(proxy["args"])
        assert args.node_id == "$(POD_NAME)", name
        assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
            proxy["env"]
        )
        assert settings.envoy_node == DOWNWARD_API["metadata.name"]
        # the one drain setting: the ConfigMap, read by the manager
        drain = config_map("wsfleet-edge-drain", resources)
        assert settings.edge_drain_budget_s == float(drain["WSFLEET_EDGE_DRAIN_BUDGET_S"])
        assert settings.edge_delist_s == float(drain["WSFLEET_EDGE_DELIST_S"])
        times = DrainTimes(
            settings.edge_drain_budget_s, settings.edge_delist_s, settings.edge_drain_margin_s
        )
        # both hooks wait on the manager (loopback), long enough, within the grace period
        grace = pod["terminationGracePeriodSeconds"]
        assert grace > times.longest_s, name
        for spec in (proxy, manager):
            hook = _pre_stop(spec)
            assert f"http://127.0.0.1:{settings.shutdown_port}{SHUTDOWN_PATH}" in hook, spec["name"]
            assert f"timeout={grace}" in hook, spec["name"]
        # readiness is Envoy's own /edge/ready (503 from the drain's start), not a TCP check
        assert proxy["readinessProbe"]["httpGet"] == {"path": "/edge/ready", "port": "public"}
        # the manager reaches the control plane's admin API with the operators' token
        xds = settings_of(one("Deployment", "xds-server"))
        assert settings.control_plane == f"http://xds-server:{xds.admin_port}"
        manager_secrets = _secret_keys(pod, manager)
        assert manager_secrets == {"wsfleet-keys/admin.token"}
        assert str(settings.admin_token_file).startswith(manager["volumeMounts"][0]["mountPath"])
        assert not any("wsfleet-keys" in key for key in _secret_keys(pod, proxy))  # Envoy: none
        # the zone's certificate, linked under the pod's node name for `wsfleet envoy`
        (identity,) = pod["initContainers"]
        tls_dir = {m["name"]: m["mountPath"] for m in identity["volumeMounts"]}
        assert str(args.tls_dir) == tls_dir["edge-tls"]
        assert tls_dir["tls"] in " ".join(identity["command"])


@pytest.mark.parametrize("directory", ["base", "overlays/region-5m"])
def test_one_envoy_at_a_time_is_disrupted_and_a_rollout_adds_one_first(directory: str) -> None:
    resources = [d for _, d in documents(ROOT / directory)]
    (budget,) = [
        d["spec"]
        for d in resources
        if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "envoy"
    ]
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget
    for envoy, _ in _envoys(directory):  # one budget covers every zone's Envoys
        labels = envoy["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= labels.items()
        assert envoy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_the_control_plane_is_probed_on_its_readiness_and_health_endpoints() -> None:
    spec = container(one("Deployment", "xds-server"))
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}


def test_the_control_plane_and_every_envoy_are_scraped() -> None:
    monitor = one("ServiceMonitor", "xds-server")["spec"]
    service = one("Service", "xds-server")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"] == [{"port": "admin", "path": "/metrics", "interval": "15s"}]

    pods = one("PodMonitor", "envoy")["spec"]
    (endpoint,) = pods["podMetricsEndpoints"]
    assert endpoint["path"] == "/stats/prometheus"
    for envoy, _ in _envoys("overlays/region-5m"):
        labels = envoy["spec"]["template"]["metadata"]["labels"]
        assert pods["selector"]["matchLabels"].items() <= labels.items()
        assert port_named(container(envoy, "envoy"), endpoint["port"]) == 9902


def test_the_adapter_rule_serves_the_metric_the_gateways_autoscaler_reads() -> None:
    rules = yaml.safe_load((ROOT / "monitoring" / "prometheus-adapter-rules.yaml").read_text())
    served = {}
    for rule in rules["rules"]:
        series = rule["seriesQuery"].split("{")[0]
        served[rule["name"]["as"]] = (series, rule)
    for path in ("base/gateways-hpa.yaml", "overlays/region-5m/gateways-hpa.yaml"):
        hpa = yaml.safe_load((ROOT / path).read_text())
        for metric in hpa["spec"]["metrics"]:
            assert metric["type"] == "Pods"  # a per-pod series: the rule maps namespace and pod
            series, rule = served[metric["pods"]["metric"]["name"]]
            assert series == "wsfleet_gateway_connections"  # the gateways' gauge
            assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
            assert "by (<<.GroupBy>>)" in rule["metricsQuery"]  # summed per pod
