"""Hostile and careless job files: every one is refused by `speechtune validate` with one
line naming the file and the field (or file:line for YAML), never a traceback, and what
validate accepts is what run accepts (the same `spec.check`)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from speechtune import cli, spec, strict_yaml

REPO = Path(__file__).resolve().parents[3]


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "examples" / name).read_text())  # type: ignore[no-any-return]


def validate_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(["validate", str(path)])
    return code, capsys.readouterr().err


def assert_one_line_refusal(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


# -- the YAML itself ---------------------------------------------------------------------

DEMO_TEXT = (REPO / "examples" / "demo.yaml").read_text()

BOMB = "apiVersion: speechtune.dev/v1alpha1\nkind: FinetuneJob\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9))

YAML_CASES: dict[str, tuple[str | bytes, str]] = {
    "duplicate key": (DEMO_TEXT.replace("    maxSteps: 1000\n", "    maxSteps: 1000\n    maxSteps: 5\n"),
                      "job.yaml:24: (yaml): duplicate key 'maxSteps' (first on line 23)"),
    "duplicate override key": (DEMO_TEXT.replace("      d_model: 96\n", "      d_model: 96\n      d_model: 97\n"),
                               "duplicate key 'd_model'"),
    "alias bomb": (BOMB, "expands to more than"),
    "deep nesting": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    "not UTF-8": (DEMO_TEXT.encode().replace(b"name: demo", b"name: d\xe9mo"), ":8: (yaml): not UTF-8"),
    "python object tag": (DEMO_TEXT + "x: !!python/object/apply:os.system ['true']\n", "(yaml)"),
    "two documents": (DEMO_TEXT + "---\n" + DEMO_TEXT, "(yaml)"),
    "empty file": ("", "(document): expected a FinetuneJob mapping"),
    "a list": ("- 1\n- 2\n", "(document): expected a FinetuneJob mapping"),
    "tabs and broken indentation": ("apiVersion: x\n\tkind: y\n", "(yaml)"),
    "over 1 MiB": ("# " + "x" * (strict_yaml.MAX_BYTES + 10) + "\n", "larger than 1048576 bytes"),
    "learningRate .nan": (DEMO_TEXT.replace("learningRate: 1.0e-3", "learningRate: .nan"),
                          "spec.training.learningRate: nan is not a finite number"),
    "gradientClipVal .inf": (DEMO_TEXT.replace("gradientClipVal: 5.0", "gradientClipVal: .inf"),
                             "spec.training.gradientClipVal: inf is not a finite number"),
    "override -.inf": (DEMO_TEXT.replace("      d_model: 96\n", "      d_model: 96\n      dropout: -.inf\n"),
                       "spec.training.overrides.dropout: -inf is not a finite number"),
    "timestamp value": (DEMO_TEXT.replace("      d_model: 96\n", "      d_model: 96\n      spm_model: 2024-01-01\n"),
                        "spec.training.overrides.spm_model: a YAML date is not a JSON value"),
    "binary value": (DEMO_TEXT.replace("  engine: speechbrain-ctc", "  engine: !!binary aGk="),
                     "spec.engine: a YAML bytes is not a JSON value"),
    "NUL in a path": (DEMO_TEXT.replace("train: train.json", 'train: "tr\\0ain.json"'),
                      "spec.data.train: contains a NUL character"),
    "integer key": (DEMO_TEXT.replace("      d_model: 96\n", "      d_model: 96\n      1: x\n"),
                    "spec.training.overrides: key 1 is not a string"),
}


@pytest.mark.timeout(20)  # the alias bomb and deep nesting must not hang
@pytest.mark.parametrize("name", YAML_CASES)
def test_bad_yaml_is_one_line_with_the_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, needle = YAML_CASES[name]
    path = tmp_path / "job.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code, err = validate_cli(path, capsys)
    assert_one_line_refusal(code, err, str(path), needle)


def test_a_directory_or_a_missing_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_refusal(*validate_cli(tmp_path, capsys), "is a directory")
    assert_one_line_refusal(*validate_cli(tmp_path / "nope.yaml", capsys), "no such file")


def test_an_unreadable_file_names_the_errno(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(DEMO_TEXT)
    path.chmod(0)
    try:
        open(path).close()
        pytest.skip("running as a user who reads mode-0 files (root)")
    except PermissionError:
        pass
    assert_one_line_refusal(*validate_cli(path, capsys), "EACCES")


def test_merge_keys_are_not_duplicates() -> None:
    assert strict_yaml.load("a: &d {x: 1, y: 2}\nb:\n  <<: *d\n  y: 3\n") == {"a": {"x": 1, "y": 2},
                                                                          "b": {"x": 1, "y": 3}}


# -- fields: spec-level and per-engine override catalogues --------------------------------

def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        *parents, leaf = path.split("/")
        node = document
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    return mutate


FIELD_CASES: dict[str, tuple[str, Callable[[dict[str, Any]], None], str, str]] = {
    # name: (example, mutation, field path, words in the message)
    "model.path with ..": ("tiny-mms.yaml", _set("spec/model/path", "models/../../etc"), "spec.model.path", "'..'"),
    "model.path is ..": ("tiny-mms.yaml", _set("spec/model/path", ".."), "spec.model.path", "'..'"),
    "data.train absolute": ("demo.yaml", _set("spec/data/train", "/etc/passwd"), "spec.data.train", "relative"),
    "sweepCsv escapes": ("demo.yaml", _set("spec/output/sweepCsv", "a/../../x.csv"), "spec.output.sweepCsv", ".."),
    "sb kernel_size 0": ("demo.yaml", _set("spec/training/overrides/kernel_size", 0),
                         "spec.training.overrides.kernel_size", "in [1, 255]"),
    "sb kernel_size even": ("demo.yaml", _set("spec/training/overrides/kernel_size", 14),
                            "spec.training.overrides.kernel_size", "odd"),
    "sb kernel_size float": ("demo.yaml", _set("spec/training/overrides/kernel_size", 15.0),
                             "spec.training.overrides.kernel_size", "expected int"),
    "sb spm_vocab_size 0": ("demo.yaml", _set("spec/training/overrides/spm_vocab_size", 0),
                            "spec.training.overrides.spm_vocab_size", "in [4"),
    "sb spm_model escapes": ("demo.yaml", lambda d: d["spec"]["training"]["overrides"].update(
        tokenizer="spm", spm_model="../../x.model"), "spec.training.overrides.spm_model", "'..'"),
    "sb spm_model without volume": ("demo.yaml", lambda d: d["spec"]["training"]["overrides"].update(
        tokenizer="spm", spm_model="tok/spm.model"), "spec.training.overrides.spm_model", "model volume"),
    "sb spm_model number": ("demo.yaml", _set("spec/training/overrides/spm_model", 5),
                            "spec.training.overrides.spm_model", "expected str"),
    "sb time_masks -1": ("demo.yaml", _set("spec/training/overrides/time_masks", -1),
                         "spec.training.overrides.time_masks", "in [0"),
    "sb log_interval 0": ("demo.yaml", _set("spec/training/overrides/log_interval", 0),
                          "spec.training.overrides.log_interval", "at least 1"),
    "sb beam_size text": ("demo.yaml", _set("spec/training/overrides/beam_size", "x"),
                          "spec.training.overrides.beam_size", "expected int"),
    "sb freq_mask_width > n_mels": ("demo.yaml", _set("spec/training/overrides/freq_mask_width", 100),
                                    "spec.training.overrides.freq_mask_width", "n_mels"),
    "sb dropout 1": ("demo.yaml", _set("spec/training/overrides/dropout", 1), "spec.training.overrides.dropout", "[0, 1)"),
    "sb unknown key": ("demo.yaml", _set("spec/training/overrides/layers", 2), "spec.training.overrides.layers", "unknown"),
    "hf unknown key": ("tiny-mms.yaml", _set("spec/training/overrides/lr", 2), "spec.training.overrides.lr", "not an hf-ctc"),
    "hf weightDecay text": ("tiny-mms.yaml", _set("spec/training/overrides/weightDecay", "0.1"),
                            "spec.training.overrides.weightDecay", "want a number"),
    "hf weightDecay negative": ("tiny-mms.yaml", _set("spec/training/overrides/weightDecay", -1),
                                "spec.training.overrides.weightDecay", ">= 0"),
    "hf numWorkers -1": ("tiny-mms.yaml", _set("spec/training/overrides/numWorkers", -1),
                         "spec.training.overrides.numWorkers", "in [0, 64]"),
    "hf evalBatchSize 0": ("tiny-mms.yaml", _set("spec/training/overrides/evalBatchSize", 0),
                           "spec.training.overrides.evalBatchSize", ">= 1"),
    "hf evalBatchSize bool": ("tiny-mms.yaml", _set("spec/training/overrides/evalBatchSize", True),
                              "spec.training.overrides.evalBatchSize", "an integer"),
    "hf freezeFeatureEncoder text": ("tiny-mms.yaml", _set("spec/training/overrides/freezeFeatureEncoder", "no"),
                                     "spec.training.overrides.freezeFeatureEncoder", "true or false"),
    "hf extraCharacters list": ("tiny-mms.yaml", _set("spec/training/overrides/extraCharacters", ["a"]),
                                "spec.training.overrides.extraCharacters", "a string"),
    "hf adapterLang path": ("tiny-mms.yaml", _set("spec/training/overrides/adapterLang", "../../x"),
                            "spec.training.overrides.adapterLang", "language code"),
    "hf vocabulary": ("tiny-mms.yaml", _set("spec/training/overrides/vocabulary", "grow"),
                      "spec.training.overrides.vocabulary", "auto, build or extend"),
    "hf modelConfig scalar": ("tiny-mms.yaml", _set("spec/training/overrides/modelConfig", 5),
                              "spec.training.overrides.modelConfig", "mapping"),
    "hf modelConfig prob 2": ("tiny-mms.yaml", _set("spec/training/overrides/modelConfig", {"mask_time_prob": 2.0}),
                              "spec.training.overrides.modelConfig.mask_time_prob", "[0, 1]"),
    "hf createBaseModel is gone": ("tiny-mms.yaml", _set("spec/training/overrides/createBaseModel", True),
                                   "spec.training.overrides.createBaseModel", "not an hf-ctc setting"),
    "hf modelConfig shape": ("tiny-mms.yaml", _set("spec/training/overrides/modelConfig", {"hidden_size": 64}),
                             "spec.training.overrides.modelConfig.hidden_size", "shape"),
    "nemo int as text": ("tiny-canary.yaml", _set("spec/training/overrides/model.encoder.n_layers", "2"),
                         "spec.training.overrides['model.encoder.n_layers']", "an integer"),
    "nemo bool as int": ("tiny-canary.yaml", _set("spec/training/overrides/model.train_ds.shuffle", 1),
                         "spec.training.overrides['model.train_ds.shuffle']", "true or false"),
    "nemo int as bool": ("tiny-canary.yaml", _set("spec/training/overrides/model.encoder.n_heads", True),
                         "spec.training.overrides['model.encoder.n_heads']", "an integer"),
    "nemo section as scalar": ("tiny-canary.yaml", _set("spec/training/overrides/model.encoder", 3),
                               "spec.training.overrides['model.encoder']", "mapping"),
    "nemo dropout 1.5": ("tiny-canary.yaml", _set("spec/training/overrides/model.encoder.dropout", 1.5),
                         "spec.training.overrides['model.encoder.dropout']", "[0, 1]"),
    "nemo num_workers -1": ("tiny-canary.yaml", _set("spec/training/overrides/model.train_ds.num_workers", -1),
                            "spec.training.overrides['model.train_ds.num_workers']", "[0, 64]"),
    "hf modelConfig loader option": ("tiny-mms.yaml", _set("spec/training/overrides/modelConfig", {"trust_remote_code": True}),
                                     "spec.training.overrides.modelConfig.trust_remote_code", "not a Wav2Vec2Config"),
    "nemo _target_": ("tiny-canary.yaml", _set("spec/training/overrides/model.spec_augment._target_", "os.system"),
                      "spec.training.overrides['model.spec_augment._target_']", "_target_ picks the code"),
    "nemo nested _target_": ("tiny-canary.yaml", _set("spec/training/overrides/model.decoding", {"x": [{"_target_": "os.system"}]}),
                             "spec.training.overrides['model.decoding.x']", "_target_ picks the code"),
    "nemo log dir": ("tiny-canary.yaml", _set("spec/training/overrides/exp_manager.explicit_log_dir", "/etc"),
                     "spec.training.overrides['exp_manager.explicit_log_dir']", "set by the runtime"),
    "nemo manifest": ("tiny-canary.yaml", _set("spec/training/overrides/model.train_ds.manifest_filepath", "/x.json"),
                      "spec.training.overrides['model.train_ds.manifest_filepath']", "set by the runtime"),
    "nemo callbacks from a checkpoint": ("tiny-canary.yaml", lambda d: (d["spec"].__setitem__("model", {"pretrained": "nvidia/canary-1b-v2"}),
                                                                        d["spec"]["training"]["overrides"].__setitem__("trainer.callbacks", [])),
                                         "spec.training.overrides['trainer.callbacks']", "set by the runtime"),
    "nemo unknown key": ("tiny-canary.yaml", _set("spec/training/overrides/model.encoder.n_layer", 2),
                         "spec.training.overrides", "unknown NeMo config key"),
    "nemo prompt format": ("tiny-canary.yaml", _set("spec/training/overrides/model.prompt_format", "whisper"),
                           "spec.training.overrides['model.prompt_format']", "supported"),
}


@pytest.mark.parametrize("name", FIELD_CASES)
def test_bad_field_is_refused_naming_it(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, mutate, field, words = FIELD_CASES[name]
    document = example(source)
    mutate(document)
    with pytest.raises(spec.SpecError) as caught:
        spec.check(copy.deepcopy(document), source="job.yaml")
    assert caught.value.path == field, str(caught.value)
    assert words in caught.value.detail, str(caught.value)
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    assert_one_line_refusal(*validate_cli(path, capsys), f"{path}: {field}: ")


def test_absolute_model_path_in_a_pod_must_be_on_a_volume() -> None:
    document = example("tiny-mms.yaml")
    document["spec"]["model"]["path"] = "/var/run/secrets/kubernetes.io/serviceaccount"
    spec.check(copy.deepcopy(document))  # locally: the user's own disk
    with pytest.raises(spec.SpecError) as caught:
        spec.check(document, in_pod=True)
    assert caught.value.path == "spec.model.path" and "outside the mounted volumes" in caught.value.detail
    document["spec"]["model"]["path"] = "/models/tiny"
    spec.check(document, in_pod=True)
    speechbrain = example("demo.yaml")
    speechbrain["spec"]["training"]["overrides"].update(tokenizer="spm", spm_model="/etc/passwd")
    with pytest.raises(spec.SpecError) as caught:
        spec.check(speechbrain, in_pod=True)
    assert caught.value.path == "spec.training.overrides.spm_model"


@pytest.mark.parametrize("run_id", ["../escape", "/tmp/x", "a/b", "..", ".hidden", "x" * 200, "a\nb"])
def test_run_id_is_one_folder_name(run_id: str) -> None:
    with pytest.raises(ValueError, match="--run-id"):
        spec.check_run_id(run_id)


def test_every_example_passes_check_without_importing_torch() -> None:
    import subprocess

    code = ("import sys, pathlib; from speechtune import spec\n"
            "for p in sorted(pathlib.Path('examples').glob('*.yaml')): spec.check_file(p)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nemo', 'speechbrain', 'transformers'))\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_validate_prints_ok_for_a_good_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(REPO / "examples" / "demo.yaml")]) == 0
    assert "ok (speechbrain-ctc, demo)" in capsys.readouterr().out


@pytest.mark.parametrize("flag", [["--run-id", "../../etc"], ["--run-id", "/abs"]])
def test_run_refuses_an_escaping_run_id_before_anything(flag: list[str], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", str(REPO / "examples" / "demo.yaml"), "--volume", f"demo-data={tmp_path}",
                     "--volume", f"demo-runs={tmp_path / 'runs'}", *flag])
    err = capsys.readouterr().err
    assert code == 2 and "--run-id" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))
