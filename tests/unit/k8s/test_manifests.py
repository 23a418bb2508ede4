"""The Kubernetes manifests, offline: each overlay renders with kustomize (`kubectl kustomize`),
every object validates against the Kubernetes API schemas (kubernetes-validate, from PyPI), and
the objects agree with each other (Services select pods, the gateway's addresses name Services,
policies and budgets select pods, Secrets exist, probes hit declared ports)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

K8S = Path(__file__).resolve().parents[3] / "k8s"
OVERLAYS = ["cpu", "gpu"]
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # not in the core schemas


def render(overlay: str) -> list[dict]:
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if kustomize:
        cmd = [kustomize, "build", str(K8S / "overlays" / overlay)]
    elif kubectl:
        cmd = [kubectl, "kustomize", str(K8S / "overlays" / overlay)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed here")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [o for o in yaml.safe_load_all(out) if o]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> list[dict]:
    return render(request.param)


def _by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


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
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    assert set(deployments) == {
        f"toolwire-{s}" for s in ("gateway", "template", "decode", "extractor")
    }
    for name, svc in services.items():  # every Service selects a Deployment's pods
        sel = svc["spec"]["selector"]
        assert any(sel.items() <= labels.items() for labels in pod_labels.values()), name
    for name, dep in deployments.items():
        container = dep["spec"]["template"]["spec"]["containers"][0]
        ports = {p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container[probe]
            port = spec.get("grpc", spec.get("httpGet", {})).get("port")
            assert port in ports or port in {p["name"] for p in container["ports"]}, (name, probe)
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]]["stringData"], (name, ref)
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
    for policy in _by_kind(objects, "NetworkPolicy").values():
        sel = policy["spec"]["podSelector"].get("matchLabels", {})
        assert not sel or any(sel.items() <= labels.items() for labels in pod_labels.values())
    for pdb in _by_kind(objects, "PodDisruptionBudget").values():
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert any(sel.items() <= labels.items() for labels in pod_labels.values())
    monitor = _by_kind(objects, "ServiceMonitor")["toolwire"]["spec"]
    scraped = [
        s
        for s in services.values()
        if monitor["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert len(scraped) == 4
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
