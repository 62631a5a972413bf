"""The property behind `speechtune validate`: over every key of every engine's override
catalogue and a spread of values (boundaries, wrong types), each spec `spec.check`
accepts passes the engine's own prepare-time construction (model, config), and each it
refuses names `spec.training.overrides.<that key>`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from speechtune import spec

REPO = Path(__file__).resolve().parents[2]
CANDIDATES: list[Any] = [-1, 0, 1, 2, 3, 0.5, 1.5, True, "x", "auto", None, [2], {}]


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "examples" / name).read_text())  # type: ignore[no-any-return]


def check_overrides(validated: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`spec.check` of a validated spec with other overrides, CEL evaluated once: the CRD
    keeps `training.overrides` opaque (x-kubernetes-preserve-unknown-fields), so only the
    JSON value checks and the engine's checks see them (asserted once per engine below)."""
    job_spec = {**validated, "training": {**validated["training"], "overrides": copy.deepcopy(overrides)}}
    for path, message in spec.json_value_problems(job_spec, ["spec"]):
        raise spec.SpecError("<memory>", path, message)
    spec.engine_checks(spec.parse(job_spec))
    return job_spec


def run_property(document: dict[str, Any], keys: list[str], base: dict[str, Any],
                 prepare: Callable[[dict[str, Any]], None], candidates: list[Any] = CANDIDATES) -> tuple[int, int]:
    accepted = refused = 0
    validated = dict(spec.check(copy.deepcopy(document)).job.spec)
    for index, key in enumerate(keys):
        for value in candidates:
            candidate = copy.deepcopy(document)
            candidate["spec"]["training"]["overrides"] = {**base, key: value}
            try:
                job_spec = check_overrides(validated, candidate["spec"]["training"]["overrides"])
                if index == 0:  # the shortcut above is spec.check itself
                    assert dict(spec.check(copy.deepcopy(candidate)).job.spec) == job_spec
            except spec.SpecError as error:
                refused += 1
                assert error.path.startswith("spec.training.overrides"), (key, value, str(error))
                assert key in error.path or key in error.detail, (key, value, str(error))
                continue
            accepted += 1
            try:
                prepare(job_spec)
            except Exception as error:  # noqa: BLE001 - the property: nothing accepted may fail here
                pytest.fail(f"validate accepted overrides.{key}={value!r} but prepare failed: {error!r}")
    return accepted, refused


def test_speechbrain_catalogue() -> None:
    import torch

    from speechtune.engines.speechbrain_ctc import model, settings

    def prepare(job_spec: dict[str, Any]) -> None:
        model_settings, train_settings = settings.from_overrides(job_spec["training"].get("overrides"))
        net = model.ConformerCTC(model_settings, vocab_size=10)
        net.set_spec_augment(train_settings)
        net.train()
        feats = torch.randn(2, 64, model_settings.n_mels)
        lens = torch.tensor([1.0, 0.75])
        with torch.no_grad():  # shapes and augmentation ranges fail in forward already
            net(net.features(feats, lens, epoch=0), lens)

    tiny = {"num_layers": 1, "d_model": 16, "nhead": 2, "d_ffn": 32, "kernel_size": 3, "frontend_channels": 8,
            "n_mels": 20, "freq_mask_width": 4, "time_mask_width": 4}
    keys = sorted(settings._MODEL_KEYS | settings._TRAIN_KEYS)
    accepted, refused = run_property(example("demo.yaml"), keys, tiny, prepare)
    assert accepted > 40 and refused > 100, (accepted, refused)


def test_hf_ctc_catalogue(tmp_path: Path) -> None:
    from pretrained import mms

    from speechtune.engines.hf_ctc import modelling, settings

    mms.random_layout(tmp_path / "models" / "tiny-mms-base")  # examples/tiny-mms.yaml's model.path

    def prepare(job_spec: dict[str, Any]) -> None:
        hf, source = settings.from_spec(spec.parse(job_spec), max_steps=1, model_dir=tmp_path)
        model, _ = modelling.load_model(source, adapter_lang=hf.adapter_lang, model_config=hf.model_config,
                                        cache_dir=None)
        assert model is not None

    keys = sorted(settings.OVERRIDE_KEYS)
    document = example("tiny-mms.yaml")
    accepted, refused = run_property(document, keys, {}, prepare)
    assert accepted >= 20 and refused > 60, (accepted, refused)
    # Wav2Vec2Config values inside modelConfig: settings pass, shapes are refused.
    validated = dict(spec.check(copy.deepcopy(document)).job.spec)
    for key in ["hidden_size", "num_attention_heads", "mask_time_prob", "hidden_dropout", "conv_kernel"]:
        for value in CANDIDATES:
            overrides = {"modelConfig": {key: value}}
            try:
                job_spec = check_overrides(validated, overrides)
            except spec.SpecError as error:
                assert error.path.startswith("spec.training.overrides.modelConfig"), str(error)
                continue
            try:
                prepare(job_spec)
            except Exception as error:  # noqa: BLE001
                pytest.fail(f"validate accepted modelConfig.{key}={value!r} but prepare failed: {error!r}")


def test_nemo_canary_catalogue() -> None:
    from omegaconf import OmegaConf

    from speechtune.engines.nemo_canary import config

    def prepare(job_spec: dict[str, Any]) -> None:
        overrides = config.flatten(job_spec["training"].get("overrides") or {})
        cfg = config.apply_overrides(config.base_config(), overrides)
        config.fill_derived_sizes(cfg["model"])
        layout = config.RunLayout(log_dir=Path("/tmp/l"), checkpoint_dir=Path("/tmp/c"), max_steps=10,
                                  device="cpu", world_size=1, nodes=1, resume=False)
        cfg = config.apply_spec(cfg, spec.parse(job_spec), layout)
        OmegaConf.create(cfg)

    base = example("tiny-canary.yaml")["spec"]["training"]["overrides"]
    keys = sorted(config.flatten(config.base_config()))
    keys = [k for k in keys if not k.startswith("model.multitask_metrics_cfg")]
    # 227 keys: one value of each kind (and a negative number) keeps this under a minute.
    accepted, refused = run_property(example("tiny-canary.yaml"), keys, base, prepare,
                                     candidates=[-1, 1, 0.5, True, "x", None, [2], {}])
    assert accepted > 300 and refused > 800, (accepted, refused)


def test_hf_config_allowlist_names_only_wav2vec2_settings() -> None:
    import inspect

    from transformers import Wav2Vec2Config

    from speechtune.engines.hf_ctc import settings

    parameters = set(inspect.signature(Wav2Vec2Config.__init__).parameters)
    assert settings.WAV2VEC2_CONFIG_KEYS <= parameters
    from pretrained import mms

    assert set(mms.CONFIG) <= settings.WAV2VEC2_CONFIG_KEYS
