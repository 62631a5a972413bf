"""Operator settings: defaults, env overrides, validation with the setting's name."""

from __future__ import annotations

import dataclasses

import pytest

from speechtune_operator import main, settings


def test_env_overrides_images_and_ports() -> None:
    loaded = settings.from_env({"SPEECHTUNE_IMAGE_HF_CTC": "reg/hf:1", "SPEECHTUNE_OPERATOR_METRICS_PORT": "9090",
                                "SPEECHTUNE_OPERATOR_NAMESPACES": "a, b", "SPEECHTUNE_SCRAPE_INTERVAL": "2.5"})
    assert loaded.image_for("hf-ctc") == "reg/hf:1"
    assert loaded.image_for("nemo-canary") == settings.Settings().image_nemo_canary
    assert loaded.metrics_port == 9090
    assert loaded.namespaces == ("a", "b")
    assert loaded.scrape_interval == 2.5


def test_empty_secret_name_disables_the_token() -> None:
    assert settings.from_env({"SPEECHTUNE_HF_TOKEN_SECRET": ""}).hf_token_secret == ""


@pytest.mark.parametrize(("env", "named"), [
    ({"SPEECHTUNE_OPERATOR_WORKERS": "many"}, "workers"),
    ({"SPEECHTUNE_OPERATOR_WORKERS": "0"}, "workers"),
    ({"SPEECHTUNE_OPERATOR_METRICS_PORT": "70000"}, "metrics_port"),
    ({"SPEECHTUNE_IMAGE_PULL_POLICY": "Sometimes"}, "image_pull_policy"),
    ({"SPEECHTUNE_SCRAPE_MAX_BYTES": "0"}, "scrape_max_bytes"),
    # The test-only scrape host stands in for a pod on loopback, never for another machine.
    ({"SPEECHTUNE_TEST_SCRAPE_HOST": "169.254.169.254"}, "test_scrape_host"),
    ({"SPEECHTUNE_TEST_SCRAPE_HOST": "localhost"}, "test_scrape_host"),
])
def test_bad_values_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        settings.from_env(env)


def test_unknown_engine_names_the_field() -> None:
    with pytest.raises(ValueError, match="spec.engine"):
        settings.Settings().image_for("whisper")


def test_flags_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEECHTUNE_SCRAPE_TIMEOUT", "7")
    args = main.parse_args(["--scrape-timeout", "2", "--namespace", "ml"])
    assert settings.from_namespace(vars(args)).scrape_timeout == 2.0
    assert args.namespace_flags == ["ml"]


def test_no_setting_takes_a_url() -> None:
    # The scrape target is the master pod's IP and metrics port, not a URL template.
    assert not [f.name for f in dataclasses.fields(settings.Settings) if "url" in f.name]
