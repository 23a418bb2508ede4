"""The gateway's, the template service's and the extractor's settings (gateway/config.py,
services/template/config.py, services/extractor/config.py): built once from the command line,
whose defaults are the configs' own, and frozen."""

from __future__ import annotations

import dataclasses

import pytest

from toolwire.gateway import config as gateway
from toolwire.request.limits import Limits
from toolwire.services.extractor import config as extractor
from toolwire.services.template import config as template
from toolwire.stack.cli import parser

CONFIGS = [
    ("gateway", gateway.GatewayConfig, gateway.DEFAULTS),
    ("template", template.TemplateConfig, template.DEFAULTS),
    ("extractor", extractor.ExtractorConfig, extractor.DEFAULTS),
]


def _serve(service: str, *flags: str):
    return parser().parse_args(["serve", service, *flags])


@pytest.mark.parametrize(("service", "cls", "defaults"), CONFIGS)
def test_no_flags_give_the_defaults(service, cls, defaults):
    assert cls.from_args(_serve(service)) == defaults == cls()


@pytest.mark.parametrize(("service", "cls", "defaults"), CONFIGS)
def test_the_config_is_frozen(service, cls, defaults):
    config = cls.from_args(_serve(service))
    for field in dataclasses.fields(cls):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(config, field.name, None)
    assert config == defaults
    hash(config)


@pytest.mark.parametrize("service", ["template", "extractor"])
def test_the_model_flags(service):
    cls = dict((s, c) for s, c, _ in CONFIGS)[service]
    config = cls.from_args(_serve(service, "--model", "null", "--tool-format", "hermes"))
    assert (config.model, config.tool_format) == ("null", "hermes")


def test_template_flags():
    config = template.TemplateConfig.from_args(
        _serve("template", "--grammar-workers", "3", "--grammar-timeout", "2.5")
    )
    assert config == template.DEFAULTS.but(grammar_workers=3, grammar_timeout=2.5)
    assert template.TemplateConfig.from_args(_serve("template", "--max-model-len", "64")) == (
        template.DEFAULTS.but(max_model_len=64)
    )


def test_gateway_flags():
    config = gateway.GatewayConfig.from_args(
        _serve(
            "gateway",
            "--grpc-port",
            "50999",
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--served-model-name",
            "m",
            "--stream-interval",
            "4",
            "--state-dir",
            "/tmp/x",
            "--drop-hosted-tools",
            "--http-parser",
            "h11",
            "--max-tools",
            "7",
            "--decode-addr",
            "10.0.0.1:1",
            "--decode-addr",
            "10.0.0.2:1",
        )
    )
    assert config == gateway.DEFAULTS.but(
        grpc_port=50999,
        api_key=("a", "b"),
        served_model_name=("m",),
        stream_interval=4,
        state_dir="/tmp/x",
        drop_hosted_tools=True,
        http_parser="h11",
        limits=Limits(max_tools=7),
        decode_addr=("10.0.0.1:1", "10.0.0.2:1"),
    )
    # An address not given is the default one; `toolwire up` gives the gateway none of them.
    assert config.template_addr == ("127.0.0.1:50061",)
    assert gateway.GatewayConfig.from_args(parser().parse_args(["up"])) == gateway.DEFAULTS


def test_a_repeated_flag_does_not_grow_the_defaults():
    """argparse appends to a list default: each parse starts from the config's empty one."""
    _serve("gateway", "--api-key", "k")
    assert gateway.GatewayConfig.from_args(_serve("gateway")).api_key == ()
