"""The Kubernetes manifests, offline: each overlay renders with kustomize (`kubectl kustomize`),
every object validates against the Kubernetes API schemas (kubernetes-validate, from PyPI), and
the objects agree with each other (Services select pods, the gateway's addresses name Services,
policies and budgets select pods, Secrets exist, probes hit declared ports). The response store:
one PostgreSQL for every gateway replica, its URL from a Secret, reachable from the gateway only
(a small NetworkPolicy evaluator below says who reaches whom)."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

K8S = Path(__file__).resolve().parents[3] / "k8s"
OVERLAYS = ["cpu", "gpu"]
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # not in the core schemas


def render(overlay: str | Path) -> list[dict]:
    """An overlay of k8s/overlays by name, or a kustomization folder."""
    folder = K8S / "overlays" / overlay if isinstance(overlay, str) else overlay
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if kustomize:
        cmd = [kustomize, "build", str(folder)]
    elif kubectl:
        cmd = [kubectl, "kustomize", str(folder)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed here")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [o for o in yaml.safe_load_all(out) if o]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> list[dict]:
    return render(request.param)


def _by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _workloads(objects) -> dict[str, dict]:
    """Deployments and StatefulSets by name (their names do not collide)."""
    return _by_kind(objects, "Deployment") | _by_kind(objects, "StatefulSet")


def selects(selector: dict | None, labels: dict) -> bool:
    """A label selector (matchLabels and matchExpressions) against a set of labels; an empty
    selector selects everything."""
    selector = selector or {}
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def test_every_object_validates_against_the_kubernetes_schemas(objects):
    kv = pytest.importorskip("kubernetes_validate")
    version = kv.latest_version()
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        kv.validate(obj, version, strict=True)  # raises with the path of what is wrong
    kinds = {o["kind"] for o in objects}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "Secret",
        "ConfigMap",
        "Namespace",
    } <= kinds


def test_objects_agree_with_each_other(objects):
    deployments = _by_kind(objects, "Deployment")
    services = _by_kind(objects, "Service")
    secrets = _by_kind(objects, "Secret")
    workloads = _workloads(objects)
    pod_labels = {n: w["spec"]["template"]["metadata"]["labels"] for n, w in workloads.items()}
    assert set(deployments) == {
        f"toolwire-{s}" for s in ("gateway", "template", "decode", "extractor")
    }
    assert set(_by_kind(objects, "StatefulSet")) == {"toolwire-postgres"}
    for name, svc in services.items():  # every Service selects a workload's pods
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= labels.items() for labels in pod_labels.values()), name
    for name, workload in workloads.items():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]]["stringData"], (name, ref)
    for name, dep in deployments.items():
        container = dep["spec"]["template"]["spec"]["containers"][0]
        ports = {p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container[probe]
            port = spec.get("grpc", spec.get("httpGet", {})).get("port")
            assert port in ports or port in {p["name"] for p in container["ports"]}, (name, probe)
        if name != "toolwire-gateway":  # internal: only the token lets the gateway in
            assert any(e["name"] == "TOOLWIRE_INTERNAL_TOKEN" for e in container["env"]), name
    gateway = deployments["toolwire-gateway"]["spec"]["template"]["spec"]["containers"][0]
    args = gateway["args"]
    for flag in ("--template-addr", "--decode-addr", "--extractor-addr"):
        host, port = args[args.index(flag) + 1].split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, flag
        # Headless: the name resolves to every pod, which the gateway spreads requests over
        # (decode and extractor per pod, template calls round robin).
        assert services[host]["spec"].get("clusterIP") == "None", flag
    for name, policy in _by_kind(objects, "NetworkPolicy").items():
        sel = policy["spec"]["podSelector"]
        assert any(selects(sel, labels) for labels in pod_labels.values()), name
    for name, pdb in _by_kind(objects, "PodDisruptionBudget").items():
        assert any(selects(pdb["spec"]["selector"], labels) for labels in pod_labels.values()), name
    monitor = _by_kind(objects, "ServiceMonitor")["toolwire"]["spec"]
    scraped = [
        s for s in services.values() if selects(monitor["selector"], s["metadata"]["labels"])
    ]
    assert len(scraped) == 4  # not postgres's: it serves no metrics
    assert "toolwire-postgres" not in {s["metadata"]["name"] for s in scraped}
    for s in scraped:  # each Service has a port one of the endpoints scrapes
        assert {p["name"] for p in s["spec"]["ports"]} & {e["port"] for e in monitor["endpoints"]}


def test_only_the_gateway_is_open_to_everyone():
    objects = render("cpu")
    policies = _by_kind(objects, "NetworkPolicy")
    assert policies["toolwire-default-deny"]["spec"]["podSelector"] == {}
    for name in ("template", "decode", "extractor"):
        rules = policies[f"toolwire-{name}"]["spec"]["ingress"]
        assert all(rule.get("from") for rule in rules), name  # no rule open to all sources
    assert "from" not in policies["toolwire-gateway"]["spec"]["ingress"][0]


def test_the_gpu_overlay_runs_decode_on_tensorrt_llm_with_a_gpu():
    decode = _by_kind(render("gpu"), "Deployment")["toolwire-decode"]["spec"]["template"]["spec"]
    container = decode["containers"][0]
    assert container["image"] == "toolwire-decode:trtllm"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    cpu = _by_kind(render("cpu"), "Deployment")["toolwire-decode"]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"].get("limits", {})


def test_the_cpu_decode_runs_as_many_step_threads_as_it_requests_cpus():
    """A step thread per node core, beyond the CPUs the pod is given, stalls ggml's spinning
    barriers (toolwire/stack/cpus.py): the decode's --threads is its CPU request."""
    decode = _by_kind(render("cpu"), "Deployment")["toolwire-decode"]["spec"]["template"]["spec"]
    container = decode["containers"][0]
    args = container["args"]
    threads = args[args.index("--threads") + 1]
    assert threads == str(container["resources"]["requests"]["cpu"])


# A KV cell of the embedded model, q8_0: 30 layers x (K + V) x 3 heads x 64, 34 bytes a block of 32.
KV_CELL_BYTES = 30 * 2 * 3 * 64 * 34 // 32
# The decode process beside its model file and KV pool, idle after a tool round: 308 MB measured
# less 92 and 96 (docs/operations.md, "Memory"), with room for a busy step's buffers.
DECODE_REST_MIB = 160


def mebibytes(quantity: str) -> float:
    units = {"Ki": 2**-10, "Mi": 1, "Gi": 2**10}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_the_cpu_decode_memory_holds_its_model_kv_pool_and_prefix_cache():
    """Its request covers the process idle (the model file, mapped, and the KV pool, allocated
    at the start), its limit that plus the prefix cache's budget: a larger --kv-tokens or
    --prefix-cache-mb without a larger limit would get the pod killed under traffic."""
    from toolwire.runtime import model_source
    from toolwire.services.decode.config import DecodeConfig

    decode = _by_kind(render("cpu"), "Deployment")["toolwire-decode"]["spec"]["template"]["spec"]
    container = decode["containers"][0]
    args = container["args"]

    def flag(name: str, default: int) -> int:
        return int(args[args.index(name) + 1]) if name in args else default

    src = model_source.resolve("embedded")
    model = Path(src.folder, src.gguf_file).stat().st_size / 2**20
    kv = flag("--kv-tokens", DecodeConfig.kv_tokens) * KV_CELL_BYTES / 2**20
    idle = model + kv + DECODE_REST_MIB
    cache = flag("--prefix-cache-mb", DecodeConfig.prefix_cache_mb)
    resources = container["resources"]
    assert mebibytes(resources["requests"]["memory"]) >= idle
    assert mebibytes(resources["limits"]["memory"]) >= idle + cache


# -- the response store: one PostgreSQL for every gateway replica -------------------------------

POSTGRES = "toolwire-postgres"
NAMESPACE = "toolwire"


def _container(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_the_response_store_is_one_postgres_statefulset(objects):
    sts = _by_kind(objects, "StatefulSet")[POSTGRES]
    pod = sts["spec"]["template"]["spec"]
    container = _container(sts)
    assert sts["spec"]["replicas"] == 1  # one database, not a cluster
    # The official image on a major version's tag (no "latest", no digest).
    m = re.fullmatch(r"postgres:(\d+)", container["image"])
    assert m, container["image"]
    major = int(m.group(1))
    # Like the other pods, not root; 999 is the image's postgres user, fsGroup lets it write
    # the volume.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 999
    assert pod["securityContext"]["fsGroup"] == 999
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() and "memory" in resources["limits"]
    # Every probe is pg_isready over TCP (the image's init-time server listens on no TCP port).
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[0] == "pg_isready", probe
        assert command[command.index("-h") + 1] == "127.0.0.1", probe
        assert command[command.index("-p") + 1] == "5432", probe
    assert {"name": "postgres", "containerPort": 5432} in container["ports"]
    # The data lives on a claim from volumeClaimTemplates, kept when the StatefulSet goes, at
    # the image's volume: /var/lib/postgresql from 18 on (PGDATA below it), .../data before.
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    mounts = {v["name"]: v["mountPath"] for v in container["volumeMounts"]}
    expected = "/var/lib/postgresql" if major >= 18 else "/var/lib/postgresql/data"
    assert mounts[claim["metadata"]["name"]] == expected
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    # Its governing Service: headless, selecting it, 5432 to the container's port.
    svc = _by_kind(objects, "Service")[sts["spec"]["serviceName"]]
    assert svc["spec"]["clusterIP"] == "None"
    assert selects(
        {"matchLabels": svc["spec"]["selector"]}, sts["spec"]["template"]["metadata"]["labels"]
    )
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 5432 and port["targetPort"] in ("postgres", 5432)


def test_every_gateway_replica_takes_the_store_url_from_the_secret(objects):
    gateway = _by_kind(objects, "Deployment")["toolwire-gateway"]
    container = _container(gateway)
    # No flag overrides the environment, and no per-replica SQLite file is asked for.
    assert "--responses-store" not in container["args"]
    assert "--state-dir" not in container["args"]
    env = _env(container)["TOOLWIRE_RESPONSES_STORE"]
    assert "value" not in env  # never a literal URL (it holds the password)
    ref = env["valueFrom"]["secretKeyRef"]
    assert ref == {"name": POSTGRES, "key": "url"}
    secret = _by_kind(objects, "Secret")[POSTGRES]["stringData"]
    # The URL names the in-cluster database: its Service and port, its user and database.
    url = urlsplit(secret["url"])
    sts = _by_kind(objects, "StatefulSet")[POSTGRES]
    pg_env = _env(_container(sts))
    svc = _by_kind(objects, "Service")[sts["spec"]["serviceName"]]
    assert url.scheme == "postgresql"
    assert url.hostname == svc["metadata"]["name"]
    assert url.port == svc["spec"]["ports"][0]["port"]
    assert url.username == pg_env["POSTGRES_USER"]["value"]
    assert url.path == "/" + pg_env["POSTGRES_DB"]["value"]
    # The database's password from the same Secret, and no usable default shipped: empty, so
    # postgres refuses to initialize and the gateway cannot log in until someone sets both.
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": POSTGRES,
        "key": "password",
    }
    assert secret["password"] == ""
    assert not url.password
    # Replicas: the reason for one shared database.
    assert (
        _by_kind(objects, "HorizontalPodAutoscaler")["toolwire-gateway"]["spec"]["minReplicas"] > 1
    )


def test_the_postgres_disruption_budget_lets_a_drain_move_it(objects):
    """One replica: a budget that forbade evicting it would block every node drain."""
    pdb = _by_kind(objects, "PodDisruptionBudget")[POSTGRES]["spec"]
    labels = _by_kind(objects, "StatefulSet")[POSTGRES]["spec"]["template"]["metadata"]["labels"]
    assert selects(pdb["selector"], labels)
    assert pdb.get("maxUnavailable", 0) >= 1 or pdb.get("minAvailable") == 0


def test_the_image_installs_the_postgres_driver():
    dockerfile = (K8S / "images" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"pip install [^\n]*\"\.\[[\w,]*postgres[\w,]*\]\"", dockerfile)


# -- who reaches whom: the NetworkPolicies, evaluated --------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A source or destination of traffic: a pod (its labels, its namespace's labels), or an
    address outside the cluster (labels None: only an ipBlock matches it)."""

    name: str
    labels: tuple[tuple[str, str], ...] | None
    namespace: tuple[tuple[str, str], ...] | None


def _ns(name: str) -> tuple[tuple[str, str], ...]:
    return (("kubernetes.io/metadata.name", name),)


def peers(objects) -> list[Peer]:
    """Every pod of the render, a pod in the monitoring namespace and one in another namespace,
    and an address outside the cluster."""
    out = [
        Peer(
            name, tuple(sorted(w["spec"]["template"]["metadata"]["labels"].items())), _ns(NAMESPACE)
        )
        for name, w in _workloads(objects).items()
    ]
    out.append(Peer("monitoring", (("app", "prometheus"),), _ns("monitoring")))
    out.append(Peer("elsewhere", (("app", "toolwire-gateway"),), _ns("default")))  # same label
    out.append(Peer("outside", None, None))
    return out


def _peer_matches(rule_peer: dict, peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        return True  # a CIDR may cover pod addresses too: any peer, to be safe
    if peer.labels is None:
        return False  # outside the cluster: only an ipBlock reaches it
    ns_sel, pod_sel = rule_peer.get("namespaceSelector"), rule_peer.get("podSelector")
    if ns_sel is None and dict(peer.namespace) != dict(_ns(NAMESPACE)):
        return False  # a bare podSelector: the policy's own namespace
    if ns_sel is not None and not selects(ns_sel, dict(peer.namespace)):
        return False
    return selects(pod_sel, dict(peer.labels))


def _port_matches(rule: dict, port: int, named: dict[str, int]) -> bool:
    entries = rule.get("ports") or [{}]
    for e in entries:
        if e.get("protocol", "TCP") != "TCP":
            continue
        p = e.get("port")
        p = named.get(p, -1) if isinstance(p, str) else p
        if p is None or p == port or (e.get("endPort") and p <= port <= e["endPort"]):
            return True
    return False


def _policy_types(policy: dict) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))


def _allowed(policies, direction: str, selected: Peer, other: Peer, port: int, named) -> bool:
    """Whether the policies that select `selected` in `direction` let it talk with `other`
    (no such policy: allowed)."""
    if selected.labels is None or dict(selected.namespace) != dict(_ns(NAMESPACE)):
        return True  # not a pod of these policies' namespace: none selects it
    chosen = [
        p
        for p in policies
        if direction.capitalize() in _policy_types(p)
        and selects(p["spec"]["podSelector"], dict(selected.labels))
    ]
    if not chosen:
        return True
    key, peers_key = ("ingress", "from") if direction == "ingress" else ("egress", "to")
    return any(
        (not rule.get(peers_key) or any(_peer_matches(r, other) for r in rule[peers_key]))
        and _port_matches(rule, port, named)
        for p in chosen
        for rule in p["spec"].get(key) or []
    )


def reaches(objects, src: Peer, dst: Peer, port: int) -> bool:
    """TCP from `src` to `dst`:`port`: `dst`'s ingress policies and `src`'s egress policies must
    both allow it."""
    policies = list(_by_kind(objects, "NetworkPolicy").values())
    for p in policies:
        assert p["metadata"].get("namespace", NAMESPACE) == NAMESPACE
    workload = _workloads(objects).get(dst.name)
    named = {}
    if workload is not None:
        for c in workload["spec"]["template"]["spec"]["containers"]:
            named |= {cp["name"]: cp["containerPort"] for cp in c.get("ports", []) if "name" in cp}
    return _allowed(policies, "ingress", dst, src, port, named) and _allowed(
        policies, "egress", src, dst, port, named
    )


def clients_of(objects, dst_name: str, port: int) -> set[str]:
    everyone = peers(objects)
    dst = next(p for p in everyone if p.name == dst_name)
    return {src.name for src in everyone if src != dst and reaches(objects, src, dst, port)}


def test_only_the_gateway_reaches_postgres(objects):
    assert clients_of(objects, POSTGRES, 5432) == {"toolwire-gateway"}
    for port in (22, 80, 8000, 9100, 9187):  # nothing else of it is open to anyone
        assert clients_of(objects, POSTGRES, port) == set(), port
    # and the database opens no connection itself (it has no need to)
    everyone = {p.name: p for p in peers(objects)}
    for dst in everyone.values():
        if dst.name != POSTGRES:
            assert not reaches(objects, everyone[POSTGRES], dst, 5432), dst.name
            assert not reaches(objects, everyone[POSTGRES], dst, 53), dst.name


def test_the_evaluator_sees_the_other_flows_as_the_policies_write_them(objects):
    """The evaluator against flows the other policies allow and deny, so that a wrong
    evaluator cannot pass the postgres test above by saying no to everything."""
    assert "outside" in clients_of(objects, "toolwire-gateway", 8000)
    assert clients_of(objects, "toolwire-decode", 50062) == {"toolwire-gateway"}
    assert clients_of(objects, "toolwire-decode", 9100) == {"monitoring"}
    assert clients_of(objects, "toolwire-extractor", 50063) == {
        "toolwire-gateway",
        "toolwire-decode",
    }


def test_a_change_that_opens_or_cuts_postgres_fails_the_check():
    base = render("cpu")

    def postgres_policy(objs):
        return _by_kind(objs, "NetworkPolicy")[POSTGRES]["spec"]

    opened = copy.deepcopy(base)  # a rule open to every source
    del postgres_policy(opened)["ingress"][0]["from"]
    assert {"outside", "monitoring", "toolwire-decode"} <= clients_of(opened, POSTGRES, 5432)
    wider = copy.deepcopy(base)  # any pod labelled as a gateway, in any namespace
    postgres_policy(wider)["ingress"][0]["from"][0]["namespaceSelector"] = {}
    assert clients_of(wider, POSTGRES, 5432) == {"toolwire-gateway", "elsewhere"}
    cut = copy.deepcopy(base)  # an egress default deny for the gateway cuts it off
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "gateway-egress", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"app": "toolwire-gateway"}},
            "policyTypes": ["Egress"],
        },
    }
    cut.append(deny)
    assert clients_of(cut, POSTGRES, 5432) == set()
    deny["spec"]["egress"] = [  # ... until it allows the database
        {"to": [{"podSelector": {"matchLabels": {"app": POSTGRES}}}], "ports": [{"port": 5432}]}
    ]
    assert clients_of(cut, POSTGRES, 5432) == {"toolwire-gateway"}


# -- a managed PostgreSQL instead -----------------------------------------------------------------


def test_the_external_postgres_component_leaves_only_the_secret(tmp_path):
    """The overlay docs/operations.md describes: an overlay of the operator's own, the
    external-postgres component, and the Secret replaced from a file."""
    (tmp_path / "postgres.env").write_text(
        "password=unused\nurl=postgresql://toolwire:pw@db.example.com:5432/toolwire"
        "?sslmode=verify-full\n"
    )
    rel = os.path.relpath(K8S, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [f"{rel}/overlays/cpu"],
                "components": [f"{rel}/components/external-postgres"],
                "secretGenerator": [
                    {"name": POSTGRES, "behavior": "replace", "envs": ["postgres.env"]}
                ],
            }
        )
    )
    objects = render(tmp_path)
    cpu = render("cpu")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    gone = {
        (k, POSTGRES) for k in ("StatefulSet", "Service", "PodDisruptionBudget", "NetworkPolicy")
    }
    assert names == {(o["kind"], o["metadata"]["name"]) for o in cpu} - gone
    # The gateway still takes its URL from the Secret, now the operator's (kept under its name).
    ref = _env(_container(_by_kind(objects, "Deployment")["toolwire-gateway"]))
    assert ref["TOOLWIRE_RESPONSES_STORE"]["valueFrom"]["secretKeyRef"] == {
        "name": POSTGRES,
        "key": "url",
    }
    assert "data" in _by_kind(objects, "Secret")[POSTGRES]
    # No policy restricts the gateway's egress, so it reaches a database outside the cluster.
    gateway = next(p for p in peers(objects) if p.name == "toolwire-gateway")
    outside = Peer("db.example.com", None, None)
    assert reaches(objects, gateway, outside, 5432)
