"""Every service's /metrics, checked by the real Prometheus tools: `promtool check metrics` on
each service's output, and Debian's `prometheus` scraping the running stack, queried over its
HTTP API for the series an operator needs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from toolwire.stack.launcher import free_port

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}

# Series that must exist after one tool call and one prose answer, by the service that exports
# them (gateway on its HTTP port, the others on their metrics ports).
EXPECTED = {
    "gateway": [
        "toolwire_requests_total",
        "toolwire_request_errors_total",
        "toolwire_request_success_total",
        "toolwire_time_to_first_token_seconds_bucket",
        "toolwire_inter_token_latency_seconds_bucket",
        "toolwire_e2e_request_latency_seconds_bucket",
        "toolwire_request_prompt_tokens_bucket",
        "toolwire_request_generation_tokens_bucket",
        "toolwire_tokens_generated_total",
        "toolwire_tool_calls_total",
        "toolwire_strict_violations_total",
        "toolwire_client_disconnects_total",
        "toolwire_requests_in_flight",
        "toolwire_request_length_capped_total",
    ],
    "decode": [
        "toolwire_num_requests_running",
        "toolwire_num_requests_waiting",
        "toolwire_batch_occupancy_ratio",
        "toolwire_kv_cache_usage_ratio",
        "toolwire_decode_steps_total",
        "toolwire_decode_step_threads",
        "toolwire_decode_thread_switches_total",
        "toolwire_generation_tokens_total",
        "toolwire_decode_aborts_total",
        "toolwire_decode_queue_timeouts_total",
        "toolwire_prefix_cache_queries_total",
        "toolwire_prefix_cache_hits_total",
    ],
    "template": [
        "toolwire_constraint_compile_seconds_bucket",
        "toolwire_constraint_cache_hits_total",
        "toolwire_constraint_cache_misses_total",
        "toolwire_constraint_compile_timeouts_total",
        "toolwire_grammar_workers",
    ],
    "extractor": ["toolwire_extractor_streams_total", "toolwire_extractor_unparsed_calls_total"],
}


def metrics_urls(stack) -> dict[str, str]:
    urls = {"gateway": f"http://127.0.0.1:{stack.port}/metrics"}
    for name in ("template", "decode", "extractor"):
        urls[name] = f"http://127.0.0.1:{stack.metrics_port(name)}/metrics"
    return urls


@pytest.fixture(scope="module")
def traffic(client, stack):
    """One strict tool call and one prose answer, streamed, so every series has a sample."""
    for kwargs in ({"tools": [WEATHER], "tool_choice": "required"}, {}):
        stream = client.chat.completions.create(
            model=stack.model,
            stream=True,
            max_tokens=24,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            **kwargs,
        )
        for _ in stream:
            pass
    httpx.post(
        f"{stack.base_url}/chat/completions",
        json={"model": stack.model},
        headers={"Authorization": f"Bearer {stack.api_key}"},
    )  # a 400: an error series


def test_every_service_exports_its_series_and_promtool_accepts_them(stack, traffic):
    promtool = shutil.which("promtool") or _install_prometheus("promtool")
    for service, url in metrics_urls(stack).items():
        text = httpx.get(url, timeout=10).text
        for name in EXPECTED[service]:
            assert f"\n{name}" in text, f"{service} does not export {name}"
        assert 'model_name="' in text
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text, text=True, capture_output=True
        )
        assert check.returncode == 0, f"{service}: {check.stdout}{check.stderr}"


@pytest.fixture(scope="module")
def prometheus_api(stack, traffic, tmp_path_factory):
    """Debian's prometheus scraping the four services every second; its API's URL."""
    prometheus = shutil.which("prometheus") or _install_prometheus("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    targets = [urllib.parse.urlsplit(u).netloc for u in metrics_urls(stack).values()]
    config = tmp / "prometheus.yml"
    config.write_text(
        json.dumps(
            {  # JSON is YAML
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "toolwire", "static_configs": [{"targets": targets}]}
                ],
            }
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield f"http://127.0.0.1:{port}/api/v1"
    proc.terminate()
    proc.wait(10)


def test_prometheus_scrapes_every_series(prometheus_api):
    names = [n for service in EXPECTED.values() for n in service]
    missing = names
    deadline = time.monotonic() + 60
    while missing and time.monotonic() < deadline:
        time.sleep(1)
        missing = [n for n in missing if not _series(prometheus_api, n)]
    assert not missing, f"not in Prometheus after 60 s: {missing}"
    up = _series(prometheus_api, "up")
    assert len(up) == 4 and all(r["value"][1] == "1" for r in up), up
    violations = _series(prometheus_api, "toolwire_strict_violations_total")
    assert violations and all(r["value"][1] == "0" for r in violations)


DASHBOARD = Path(__file__).resolve().parents[2] / "k8s" / "grafana" / "toolwire-dashboard.json"


def _dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def test_every_dashboard_query_resolves(prometheus_api, stack):
    exported = set()
    for url in metrics_urls(stack).values():
        exported |= {
            ln.split("{")[0].split()[0]
            for ln in httpx.get(url).text.splitlines()
            if ln and not ln.startswith("#")
        }
    queries = _dashboard_queries()
    assert len(queries) >= 20
    for expr in queries:
        for name in re.findall(r"\btoolwire_[a-z0-9_]+", expr):
            assert name in exported, f"the dashboard queries {name}, which nothing exports"
    deadline = time.monotonic() + 60  # scrapes every second; rate() needs two samples
    for expr in queries:
        query = expr.replace("$model", ".*").replace("$__rate_interval", "1m")
        while True:
            r = httpx.get(f"{prometheus_api}/query", params={"query": query}, timeout=10).json()
            assert r["status"] == "success", (expr, r)
            if r["data"]["result"]:
                break
            assert time.monotonic() < deadline, f"no series for {expr}"
            time.sleep(1)


def _series(api: str, query: str) -> list:
    try:
        r = httpx.get(f"{api}/query", params={"query": query}, timeout=5)
        return r.json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError):
        return []


def _install_prometheus(binary: str) -> str:
    """Debian's prometheus (it brings promtool), installed by the test set-up."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"{binary} is not installed and apt-get as root is not available here")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"could not install Debian's prometheus: {result.stderr[-300:]}")
    path = shutil.which(binary) or str(Path("/usr/bin") / binary)
    if not Path(path).exists():
        pytest.skip(f"the prometheus package brought no {binary}")
    return path
