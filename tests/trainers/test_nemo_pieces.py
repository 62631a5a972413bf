"""nemo-canary pieces that need no training: config building, overrides, spec checks,
manifest checks, 2D bins, checkpoint ranking and averaging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechtune import spec as specs
from speechtune.engines.nemo_canary import bins
from speechtune.engines.nemo_canary import export as nemo_export
from speechtune.engines.nemo_canary import check_spec, config, manifests, tokenizers, weights


def _spec(**training: object) -> dict[str, object]:
    return {"engine": "nemo-canary", "data": {"volume": {"claimName": "d"}, "train": "t.json", "validation": "v.json"},
            "training": {"maxSteps": 10, **training}, "output": {"volume": {"claimName": "o"}, "saveTopK": 3}}


def _layout(tmp_path: Path, **changes: object) -> config.RunLayout:
    values: dict[str, object] = dict(log_dir=tmp_path / "nemo", checkpoint_dir=tmp_path / "ckpt", max_steps=50,
                                     device="cpu", world_size=1, nodes=1, resume=True)
    values.update(changes)
    return config.RunLayout(**values)  # type: ignore[arg-type]


class TestOverrides:
    def test_dotted_keys_set_nested_values(self) -> None:
        cfg = config.apply_overrides(config.base_config(), {"model.encoder.n_layers": 2, "trainer.log_every_n_steps": 1})
        assert cfg["model"]["encoder"]["n_layers"] == 2
        assert cfg["trainer"]["log_every_n_steps"] == 1
        assert config.base_config()["model"]["encoder"]["n_layers"] == 24  # the base is not mutated

    def test_unknown_key_is_refused_by_name(self) -> None:
        with pytest.raises(ValueError, match=r"'model\.encoder\.n_layer'"):
            config.apply_overrides(config.base_config(), {"model.encoder.n_layer": 2})

    def test_nested_mapping_flattens_to_dotted_keys(self) -> None:
        assert config.flatten({"model": {"encoder": {"n_layers": 2}}, "a.b": [1, 2]}) == {
            "model.encoder.n_layers": 2, "a.b": [1, 2]}

    def test_derived_sizes_follow_model_defaults(self) -> None:
        cfg = config.apply_overrides(config.base_config(), {"model.model_defaults.lm_dec_hidden": 96,
                                                           "model.model_defaults.asr_enc_hidden": 64})
        config.fill_derived_sizes(cfg["model"])
        assert cfg["model"]["encoder"]["d_model"] == 64
        assert cfg["model"]["transf_decoder"]["config_dict"]["inner_size"] == 384
        assert cfg["model"]["head"]["hidden_size"] == 96


class TestApplySpec:
    def test_cpu_runs_fp32_on_one_device(self, tmp_path: Path) -> None:
        cfg = config.apply_spec(config.base_config(), specs.parse(_spec(precision="bf16")), _layout(tmp_path))
        trainer = cfg["trainer"]
        assert (trainer["accelerator"], trainer["devices"], trainer["strategy"], trainer["precision"]) == (
            "cpu", 1, "auto", "32-true")
        assert trainer["sync_batchnorm"] is False

    def test_gpu_cluster_runs_bf16_ddp_across_nodes(self, tmp_path: Path) -> None:
        layout = _layout(tmp_path, device="cuda:0", world_size=16, nodes=2)
        trainer = config.apply_spec(config.base_config(), specs.parse(_spec(precision="bf16")), layout)["trainer"]
        assert (trainer["precision"], trainer["strategy"], trainer["devices"], trainer["num_nodes"]) == (
            "bf16-mixed", "ddp", 8, 2)

    def test_training_fields_reach_trainer_optimizer_and_data(self, tmp_path: Path) -> None:
        spec = _spec(learningRate=1e-4, warmupSteps=7, batchDuration=120, valCheckInterval=20, limitValBatches=5,
                     gradientClipVal=1.0, gradAccumulation=2)
        cfg = config.apply_spec(config.base_config(), specs.parse(spec), _layout(tmp_path, resume=False))
        assert cfg["trainer"]["val_check_interval"] == 20 and cfg["trainer"]["check_val_every_n_epoch"] is None
        assert (cfg["trainer"]["limit_val_batches"], cfg["trainer"]["gradient_clip_val"]) == (5, 1.0)
        assert cfg["trainer"]["accumulate_grad_batches"] == 2
        assert cfg["model"]["optim"]["lr"] == 1e-4
        assert cfg["model"]["optim"]["sched"] == {"name": "InverseSquareRootAnnealing", "warmup_steps": 7,
                                                  "min_lr": 1e-6, "max_steps": 50}
        assert cfg["model"]["train_ds"]["batch_duration"] == 120.0
        params = cfg["exp_manager"]["checkpoint_callback_params"]
        assert (params["save_top_k"], params["always_save_nemo"], params["dirpath"]) == (3, True, str(tmp_path / "ckpt"))
        assert cfg["exp_manager"]["resume_if_exists"] is False
        assert cfg["exp_manager"]["resume_ignore_no_checkpoint"] is True

    def test_data_mix_and_eval_sets(self, tmp_path: Path) -> None:
        model = config.base_config()["model"]
        model["train_ds"]["batch_duration"] = 100
        config.point_datasets(
            model,
            train=[config.ManifestInput(tmp_path / "a.json"),
                   config.ManifestInput(tmp_path / "ast.json", 0.2, {"pnc": "no"})],
            validation=config.ManifestInput(tmp_path / "v.json"),
            test=config.ManifestInput(tmp_path / "t.json"),
        )
        mix = model["train_ds"]["input_cfg"]
        assert [(m["manifest_filepath"], m["weight"]) for m in mix] == [
            (str(tmp_path / "a.json"), 1.0), (str(tmp_path / "ast.json"), 0.2)]
        assert mix[1]["tags"] == {"pnc": "no"} and "tags" not in mix[0]
        test = model["test_ds"]
        assert (test["prompt_format"], test["min_duration"], test["max_duration"]) == ("canary2", 0.1, 40.0)
        assert test["batch_duration"] == 300.0 and test["lang_field"] == "target_lang"

    def test_no_test_manifest_means_no_test_ds(self, tmp_path: Path) -> None:
        model = config.base_config()["model"]
        config.point_datasets(model, train=[config.ManifestInput(tmp_path / "a.json")],
                              validation=config.ManifestInput(tmp_path / "v.json"), test=None)
        assert model["test_ds"] is None and model["validation_ds"]["input_cfg"]

    def test_sequence_length_grows_only_when_needed(self) -> None:
        model = config.base_config()["model"]
        config.ensure_sequence_length(model, 100)
        assert model["transf_decoder"]["config_dict"]["max_sequence_length"] == 512
        config.ensure_sequence_length(model, 700)
        assert model["transf_decoder"]["config_dict"]["max_sequence_length"] == 768



class TestWeights:
    """spec.model.init: prefixes (as the CRD says), and vocabulary rows kept by token."""

    def test_include_and_exclude_are_prefixes_not_substrings(self) -> None:
        assert weights.selected("encoder.layers.0.w", ["encoder"], [])
        assert not weights.selected("transf_encoder.layers.0.w", ["encoder"], [])  # NeMo's substring would load it
        assert not weights.selected("encoder.pre_encode.conv.0.w", ["encoder"], ["encoder.pre_encode"])
        assert weights.selected("log_softmax.mlp.layer0.bias", [], ["transf_decoder._embedding"])

    def test_grown_vocabulary_keeps_rows_by_token(self) -> None:
        import torch

        old = ["spl_tokens/<|en|>", "en/a", "en/b"]
        new = ["spl_tokens/<|en|>", "spl_tokens/<|fr|>", "en/a", "en/b", "fr/a"]  # <|fr|> shifts en's ids
        rows = weights.row_map(new, old)
        assert rows == [0, None, 1, 2, None]
        model = torch.nn.Module()
        model.log_softmax = torch.nn.Module()
        model.log_softmax.mlp = torch.nn.Module()
        model.log_softmax.mlp.layer0 = torch.nn.Linear(2, 5)
        model.other = torch.nn.Linear(2, 2)
        source = {"log_softmax.mlp.layer0.weight": torch.arange(6.0).reshape(3, 2),
                  "log_softmax.mlp.layer0.bias": torch.tensor([10.0, 11.0, 12.0]),
                  "other.weight": torch.ones(2, 2), "other.bias": torch.zeros(2)}
        fresh = model.log_softmax.mlp.layer0.bias.detach().clone()
        report = weights.load_into(model, source, rows=rows)
        bias = model.log_softmax.mlp.layer0.bias.detach()
        assert bias[[0, 2, 3]].tolist() == [10.0, 11.0, 12.0]
        assert bias[[1, 4]].tolist() == fresh[[1, 4]].tolist()  # new tokens keep their initialisation
        assert report.grown["log_softmax.mlp.layer0.weight"] == (3, 5) and report.loaded == 2

    def test_other_shape_change_is_refused_by_name(self) -> None:
        import torch

        with pytest.raises(ValueError, match=r"spec\.model\.init: parameter weight has shape \(3, 2\).*exclude"):
            weights.load_into(torch.nn.Linear(2, 4), {"weight": torch.zeros(3, 2), "bias": torch.zeros(4)})


class TestCheckSpec:
    def test_epochs_is_refused_not_ignored(self) -> None:
        with pytest.raises(ValueError, match=r"spec\.training\.epochs: not supported by nemo-canary"):
            check_spec(specs.parse(_spec(epochs=3)))

    def test_from_scratch_refuses_unknown_override(self) -> None:
        with pytest.raises(ValueError, match=r"spec\.training\.overrides.*'model\.encoder\.layers'"):
            check_spec(specs.parse(_spec(overrides={"model.encoder.layers": 2})))

    def test_known_overrides_pass(self) -> None:
        notes = check_spec(specs.parse(_spec(overrides={"model.encoder.n_layers": 2, "lang_tokenizers.vocab_size": 64})))
        assert any("from scratch" in note for note in notes)

    def test_max_steps_is_required(self) -> None:
        spec = _spec()
        spec["training"] = {"epochs": 3}
        with pytest.raises(ValueError, match=r"spec\.training\.maxSteps"):
            check_spec(specs.parse(spec))

    def test_prompt_format_must_be_canary(self) -> None:
        with pytest.raises(ValueError, match="prompt_format"):
            check_spec(specs.parse(_spec(overrides={"model.prompt_format": "gemma"})))

    def test_peft_is_refused(self) -> None:
        with pytest.raises(ValueError, match=r"spec\.training\.peft\.method"):
            check_spec(specs.parse(_spec(peft={"method": "lora"})))


class TestManifests:
    def _write(self, path: Path, rows: list[dict[str, object]]) -> Path:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    def test_missing_source_lang_is_named_with_its_line(self, tmp_path: Path) -> None:
        path = self._write(tmp_path / "m.json", [
            {"audio_filepath": "a.wav", "duration": 1.0, "text": "hi", "source_lang": "en", "target_lang": "en"},
            {"audio_filepath": "b.wav", "duration": 1.0, "text": "hi", "target_lang": "en"}])
        problems = manifests.prompt_problems(manifests.read(path), prompt_format="canary2")
        assert problems == [f"{path}:2: missing source_lang (required by the canary2 prompt)"]

    def test_language_without_tokenizer_is_named(self, tmp_path: Path) -> None:
        path = self._write(tmp_path / "m.json", [
            {"audio_filepath": "a.wav", "duration": 1.0, "text": "salut", "source_lang": "en", "target_lang": "fr"}])
        problems = manifests.language_problems(manifests.read(path), text_languages=["en", "de"],
                                               prompt_tokens={"<|en|>", "<|de|>"})
        assert any("target_lang 'fr' has no tokenizer" in p for p in problems)
        assert any("language 'fr' needs the special token <|fr|>" in p for p in problems)

    def test_every_prompt_token_of_a_row_is_checked(self, tmp_path: Path) -> None:
        """A unified tokenizer (text_languages None) writes every language; the prompt's
        task and flag tokens are checked against the vocabulary like the languages."""
        path = self._write(tmp_path / "m.json", [
            {"audio_filepath": "a.wav", "duration": 1.0, "text": "x", "source_lang": "en", "target_lang": "de",
             "taskname": "ast", "pnc": "no", "itn": "yes"}])
        rows = manifests.read(path)
        canary2 = {"<|startofcontext|>", "<|startoftranscript|>", "<|endoftext|>", "<|en|>", "<|de|>", "<|nopnc|>",
                   "<|notimestamp|>", "<|nodiarize|>", "<|emo:undefined|>"}
        problems = manifests.language_problems(rows, text_languages=None, prompt_tokens=canary2)
        assert problems == [f"{path}:1: itn 'yes' needs the special token <|itn|>, which the model's vocabulary lacks"]
        canary1 = {"<|startoftranscript|>", "<|endoftext|>", "<|en|>", "<|de|>", "<|nopnc|>", "<|transcribe|>"}
        problems = manifests.language_problems(rows, text_languages=None, prompt_tokens=canary1, prompt_format="canary")
        assert problems == [f"{path}:1: taskname 'ast' needs the special token <|translate|>, which the model's "
                            "vocabulary lacks"]

    def test_pnc_default_only_for_manifests_without_it(self, tmp_path: Path) -> None:
        with_pnc = manifests.read(self._write(tmp_path / "a.json", [{"text": "x", "pnc": "no"}]))
        without = manifests.read(self._write(tmp_path / "b.json", [{"text": "x"}]))
        assert manifests.missing_slot_tags(with_pnc, {"pnc": "yes"}) == {}
        assert manifests.missing_slot_tags(without, {"pnc": "yes"}) == {"pnc": "yes"}

    def test_bad_json_line_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "m.json"
        path.write_text('{"text": "a"}\n{oops\n')
        with pytest.raises(ValueError, match=r"m\.json:2"):
            manifests.read(path)


def test_hypotheses_lose_control_tokens_but_keep_timestamps() -> None:
    from speechtune.engines.nemo_canary import engine

    assert engine.clean_hypothesis(" <|pnc|><|pnc|> hallo  welt<|endoftext|>") == "hallo welt"
    assert engine.clean_hypothesis("<|3|> it's <|7|>") == "<|3|> it's <|7|>"


def test_canary2_special_tokens_cover_the_prompt_and_fill_a_power_of_two() -> None:
    tokens = tokenizers.special_tokens("canary2", ["en", "de"])
    for needed in ("<|startofcontext|>", "<|startoftranscript|>", "<|emo:undefined|>", "<|en|>", "<|de|>",
                   "<|pnc|>", "<|noitn|>", "<|notimestamp|>", "<|nodiarize|>", "<|899|>", "<|spk15|>"):
        assert needed in tokens
    assert len(tokens) + 3 == 1024
    assert "<|transcribe|>" in tokenizers.special_tokens("canary", ["en"])


class TestBins:
    def test_bins_split_duration_then_tokens(self) -> None:
        durations = [1.0, 1.0, 1.0, 1.0, 2.0, 2.0]  # two buckets of 4 s of audio each
        tokens = [32, 10, 30, 12, 90, 50]
        result = bins.estimate_bins_2d(durations, tokens, num_buckets=2, num_subbuckets=2)
        assert result == [(1.0, 30), (1.0, 32), (2.0, 50), (2.0, 90)]

    def test_every_utterance_fits_some_bin(self) -> None:
        durations = [0.5 + 0.1 * i for i in range(50)]
        tokens = [5 + (7 * i) % 30 for i in range(50)]
        result = bins.estimate_bins_2d(durations, tokens, num_buckets=4, num_subbuckets=3)
        assert all(any(d <= bd and t <= bt for bd, bt in result) for d, t in zip(durations, tokens))
        assert result == sorted(result)

    def test_overrides_block_includes_batch_sizes(self) -> None:
        block = bins.Bins(duration_tokens=[(2.0, 10), (4.0, 20)], batch_sizes=bins.batch_sizes_for([(2.0, 10), (4.0, 20)], 40)).as_overrides()
        assert block["model.train_ds.bucket_duration_bins"] == [[2.0, 10], [4.0, 20]]
        assert block["model.train_ds.bucket_batch_size"] == [20, 10]
        assert block["model.train_ds.use_bucketing"] is True


class TestExportRanking:
    def test_best_first_without_last_copies(self, tmp_path: Path) -> None:
        names = ["c--val_loss=0.9000-step=10.ckpt", "c--val_loss=0.5000-step=20.ckpt",
                 "c--val_loss=0.5000-step=20-last.ckpt", "c--val_loss=0.7000-step=30.ckpt"]
        ranked = nemo_export.rank_checkpoints([tmp_path / n for n in names])
        assert [p.name for p in ranked] == [names[1], names[3], names[0]]

    def test_average_of_float_tensors_keeps_integer_buffers(self) -> None:
        import torch

        a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(5)}
        b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(9)}
        averaged = nemo_export.average_state_dicts([a, b])
        assert torch.equal(averaged["w"], torch.tensor([2.0, 4.0])) and int(averaged["n"]) == 5

    def test_average_refuses_mismatched_checkpoints(self) -> None:
        import torch

        with pytest.raises(ValueError, match="different parameters"):
            nemo_export.average_state_dicts([{"w": torch.zeros(1)}, {"v": torch.zeros(1)}])
