"""Checks the rendered Deployment of helm/herald for every value set.

Reads the manifests tests/deploy/check rendered into $HERALD_DEPLOY_RENDERED
(<set>/<template>.yaml) and renders broken value sets itself to show the chart
refuses them.
"""
import os
import pathlib
import re
import tomllib

import pytest
import yaml

RENDERED = pathlib.Path(os.environ.get("HERALD_DEPLOY_RENDERED", pathlib.Path(__file__).parent / ".rendered"))
CHART = pathlib.Path(os.environ.get("HERALD_CHART", pathlib.Path(__file__).parents[2] / "helm" / "herald"))
VALUE_SETS = ["default"] + sorted(p.stem for p in (CHART / "ci").glob("*.yaml"))


def load(value_set, template):
    path = RENDERED / value_set / template
    assert path.exists(), f"{value_set}: {template} was not rendered"
    return yaml.safe_load(path.read_text())


def seconds(duration):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9]+)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * units[u] for n, u in parts)


@pytest.fixture(params=VALUE_SETS)
def rendered(request):
    name = request.param
    dep = load(name, "deployment.yaml")
    cm = load(name, "configmap.yaml")
    config = tomllib.loads(cm["data"]["herald.toml"])
    pod = dep["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "herald"]
    return name, dep, pod, container, config


def test_probes_on_the_internal_port(rendered):
    name, _, _, c, config = rendered
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["internal"] == config["http_server"]["internal_port"] != 0, name
    assert ports["public"] == config["http_server"]["port"], name
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, f"{name}: {probe} path"
        assert get["port"] in ("internal", ports["internal"]), f"{name}: {probe} not on the internal port"
        assert get.get("scheme", "HTTP") == "HTTP", f"{name}: the internal listener is plain HTTP"
    assert config["health"]["enabled"] is True


def test_grace_period_above_shutdown_timeout(rendered):
    name, _, pod, _, config = rendered
    assert pod["terminationGracePeriodSeconds"] > seconds(config["shutdown"]["timeout"]), name


def test_no_service_links_and_no_api_token(rendered):
    name, _, pod, _, _ = rendered
    assert pod["enableServiceLinks"] is False, name
    assert pod["automountServiceAccountToken"] is False, name


def test_security_context(rendered):
    name, _, pod, c, _ = rendered
    psc, sc = pod.get("securityContext", {}), c["securityContext"]
    assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, name
    assert sc.get("runAsUser", psc.get("runAsUser", 0)) != 0, name
    assert sc["readOnlyRootFilesystem"] is True, name
    assert sc["allowPrivilegeEscalation"] is False, name
    assert sc.get("privileged", False) is False, name
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), name
    assert sc.get("seccompProfile", psc.get("seccompProfile"))["type"] == "RuntimeDefault", name
    # The only writable paths are volumes.
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), name


def _file_keys(config, prefix=""):
    """(dotted key, path) of every *_file key, keyrings included."""
    for k, v in config.items():
        if isinstance(v, dict):
            yield from _file_keys(v, f"{prefix}{k}.")
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    yield from _file_keys(item, f"{prefix}{k}[{i}].")
        elif k.endswith("_file") and v:
            yield prefix + k, v


def test_secrets_mounted_as_files_and_named_in_the_config(rendered):
    name, _, pod, c, config = rendered
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert "subPath" not in mount, f"{name}: subPath mounts never update"
    assert mount["readOnly"] is True
    assert c["args"] == ["serve", "--config", f'{mount["mountPath"]}/herald.toml'], name
    (vol,) = [v for v in pod["volumes"] if v["name"] == "config"]
    mounted = {}
    for source in vol["projected"]["sources"]:
        kind = "configMap" if "configMap" in source else "secret"
        for item in source[kind]["items"]:
            mounted[f'{mount["mountPath"]}/{item["path"]}'] = (kind, source[kind]["name"], item["key"])
    assert mounted[f'{mount["mountPath"]}/herald.toml'][0] == "configMap"
    secret_files = {p for p, (kind, _, _) in mounted.items() if kind == "secret"}
    assert secret_files, f"{name}: no secret mounted"
    referenced = dict(_file_keys(config))
    # Every mounted secret is used by the config and every *_file key names a mounted file.
    assert set(referenced.values()) == secret_files, (name, referenced, secret_files)
    # The HMAC secret and the API key are files, never inline values.
    assert "client.token.hmac_secret_key_file" in referenced, name
    assert "http_api.key_file" in referenced, name
    for section, key in (("client", "token"), ("http_api", None)):
        table = config[section][key] if key else config[section]
        assert "hmac_secret_key" not in table and "key" not in table, name
    for ring, field in (("bus_integrity", "secret_file"), ("history_encryption", "key_file")):
        ids = [k["id"] for k in config[ring].get("keys", [])]
        assert all(field in k for k in config[ring].get("keys", [])), name
        assert config[ring]["active"] in ids + [""], f"{name}: {ring}.active names no key"
    if config["http_server"]["tls"]["enabled"]:
        for key in ("cert_pem_file", "key_pem_file"):
            assert config["http_server"]["tls"][key] in secret_files, name
    # Secrets never reach the environment.
    for env in c.get("env", []):
        assert "valueFrom" not in env or "secretKeyRef" not in env["valueFrom"], name


def test_redis_value_set():
    dep = load("redis", "deployment.yaml")
    config = tomllib.loads(load("redis", "configmap.yaml")["data"]["herald.toml"])
    assert dep["spec"]["replicas"] == 3
    assert config["engine"]["type"] == "redis"
    assert config["engine"]["redis"]["address"] == ["redis://redis-master.redis.svc.cluster.local:6379"]
    assert config["engine"]["redis"]["password_file"].startswith("/etc/herald/")
    assert config["bus_integrity"]["active"] == "k1"
    # The web console: its password hash and session key come from the Secret as files.
    assert config["admin"]["enabled"] is True
    assert config["admin"]["password_file"] == "/etc/herald/secrets/admin_password"
    assert config["admin"]["secret_file"] == "/etc/herald/secrets/admin_secret"
    assert "password" not in config["admin"] and "secret" not in config["admin"]
    ingress = load("redis", "ingress.yaml")
    ann = ingress["metadata"]["annotations"]
    assert int(ann["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(ann["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    for rule in ingress["spec"]["rules"]:
        for p in rule["http"]["paths"]:
            assert p["backend"]["service"]["port"]["name"] == "public"
    assert load("redis", "servicemonitor.yaml")["spec"]["endpoints"][0]["port"] == "internal"


def test_tls_value_set():
    config = tomllib.loads(load("tls", "configmap.yaml")["data"]["herald.toml"])
    tls = config["http_server"]["tls"]
    assert tls["enabled"] is True and tls["client_auth"] == "required"
    assert tls["client_ca_pem_file"] == "/etc/herald/client-ca/ca.crt"
    assert load("tls", "hpa.yaml")["apiVersion"] == "autoscaling/v2"


def test_memory_value_set():
    dep = load("memory", "deployment.yaml")
    config = tomllib.loads(load("memory", "configmap.yaml")["data"]["herald.toml"])
    assert dep["spec"]["replicas"] == 1 and config["engine"]["type"] == "memory"
    assert not (RENDERED / "memory" / "secret.yaml").exists(), "existingSecret: the chart makes no Secret"


def test_network_policy_limits_the_internal_port():
    for name in VALUE_SETS:
        path = RENDERED / name / "networkpolicy.yaml"
        if not path.exists():
            continue
        rules = yaml.safe_load(path.read_text())["spec"]["ingress"]
        by_port = {r["ports"][0]["port"]: r for r in rules}
        assert "from" not in by_port["public"], name
        sources = by_port["internal"]["from"]
        assert sources and all("ipBlock" not in s for s in sources), name


# --- the chart refuses broken values ------------------------------------------

def _render(values):
    from helm_python.chart import Chart
    return Chart.load(str(CHART)).render(values, name="herald", namespace="herald")


@pytest.mark.parametrize("values, why", [
    ({"replicaCont": 3}, "a misspelt top-level key"),
    ({"config": {"shutdown": {"timout": "30s"}}}, "a misspelt config key"),
    ({"terminationGracePeriodSeconds": 30}, "a grace period not above shutdown.timeout"),
    ({"replicaCount": 3}, "several nodes on the memory engine"),
    ({"config": {"engine": {"type": "postgres"}}}, "an unknown engine"),
    ({"config": {"client": {"token": {"hmac_secret_key": "inline"}}}}, "a secret in the ConfigMap"),
    ({"tls": {"enabled": True, "secretName": "x", "clientAuth": "required"}}, "mTLS without a client CA"),
    ({"config": {"bus_integrity": {"active": "nokey"}}}, "an active bus key that is not in the Secret"),
])
def test_broken_values_are_refused(values, why):
    with pytest.raises(Exception):
        _render(values)
