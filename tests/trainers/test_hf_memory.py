"""The hf-ctc memory estimate: its parameter arithmetic against real models, and the
guide's table (full fine-tuning of MMS-1B does not fit 12 GB; LoRA fits 8 GB)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import peft
import pytest
import yaml
from pretrained import mms
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from speechtune import cli, spec as specs
from speechtune.engines.hf_ctc import memory as hf_memory
from typed_specs import typed

REPO = Path(__file__).resolve().parents[2]
MMS_JOB = REPO / "examples" / "finetunejob-mms-banglish-lora.yaml"


def mms_spec(method: str, gpu_gib: int | None, **training: Any) -> dict[str, Any]:
    spec = copy.deepcopy(dict(specs.load(MMS_JOB).spec))
    spec["training"]["peft"] = {"method": method}
    spec["training"].update(training)
    if gpu_gib is None:
        spec["resources"].pop("gpuMemoryGiB", None)
    else:
        spec["resources"]["gpuMemoryGiB"] = gpu_gib
    return spec


def test_full_finetuning_of_mms_1b_is_refused_on_12_gb() -> None:
    with pytest.raises(ValueError, match=r"^spec.resources.gpuMemoryGiB: none fine-tuning of facebook/mms-1b-all needs about (\d+\.\d) GiB") as error:
        hf_memory.check_spec(typed(mms_spec("none", 12)))
    needed = float(str(error.value).split("about ")[1].split(" GiB")[0])
    assert needed > 14  # the guide: ~14-16 GB, "no" even on the 12 GB card


def test_lora_and_adapters_on_mms_1b_fit_8_gb() -> None:
    for method in ("lora", "adapters"):
        lines = hf_memory.check_spec(typed(mms_spec(method, 8)))
        text = "\n".join(lines)
        for part in ("weights", "gradients", "optimizer", "activations", "of 8 GiB GPU"):
            assert part in text
        millions = float(re.search(r"([\d.]+) M parameters", text).group(1))  # type: ignore[union-attr]
        assert 960 < millions < 975  # MMS-1B: ~965 M (+ LoRA matrices)


def test_shipped_mms_example_passes_its_own_check() -> None:
    assert hf_memory.check_spec(specs.load(MMS_JOB).typed)


def test_bigger_batches_need_more_memory_and_checkpointing_saves_it() -> None:
    arch = hf_memory.KNOWN_MODELS["facebook/mms-1b-all"]
    small = hf_memory.estimate(arch, mode="lora", precision="fp16", utterances=2, seconds=10)
    big = hf_memory.estimate(arch, mode="lora", precision="fp16", utterances=16, seconds=10)
    saved = hf_memory.estimate(arch, mode="lora", precision="fp16", utterances=16, seconds=10, gradient_checkpointing=True)
    assert small.total < big.total and saved.activations < big.activations / 4
    with pytest.raises(ValueError, match="spec.resources.gpuMemoryGiB"):
        hf_memory.check_spec(typed(mms_spec("lora", 8, batchSize=16)))


def test_default_gpu_size_is_stated_as_an_assumption() -> None:
    text = "\n".join(hf_memory.check_spec(typed(mms_spec("lora", None))))
    assert f"{hf_memory.DEFAULT_GPU_MEMORY_GIB} GiB GPU (assumed; set spec.resources.gpuMemoryGiB)" in text


def test_cpu_job_is_measured_against_pod_memory() -> None:
    spec = mms_spec("none", None)
    spec["resources"] = {"gpusPerNode": 0, "memory": "8Gi"}
    spec["training"]["precision"] = "fp32"
    with pytest.raises(ValueError, match=r"^spec.resources.memory: "):
        hf_memory.check_spec(typed(spec))


def test_unknown_model_gets_a_note_not_an_error() -> None:
    spec = {"engine": "hf-ctc", "model": {"pretrained": "someone/unknown-w2v"}, "training": {"maxSteps": 1}}
    assert "no estimate" in hf_memory.check_spec(typed(spec))[0]


@pytest.mark.parametrize("config", [
    mms.CONFIG,
    {**mms.CONFIG, "adapter_attn_dim": None, "conv_dim": [32, 48, 64], "conv_kernel": [10, 3, 3],
     "conv_stride": [5, 4, 4], "num_hidden_layers": 3, "intermediate_size": 160},
])
def test_parameter_arithmetic_matches_transformers(config: dict[str, Any]) -> None:
    model = Wav2Vec2ForCTC(Wav2Vec2Config(**{**config, "vocab_size": 40}))
    arch = hf_memory.Architecture.from_config(config)
    assert hf_memory.total_parameters(arch, 40) == sum(p.numel() for p in model.parameters())
    adapters = sum(p.numel() for n, p in model.named_parameters() if ".adapter_layer." in n)
    assert hf_memory.adapter_parameters(arch) == adapters
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lora_count = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    assert hf_memory.lora_parameters(arch, 4, ["q_proj", "v_proj"]) == lora_count


def test_validate_prints_the_estimate(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """From the model folder's config.json when model.path is absolute (tiny-mms.yaml's
    base, as `make tiny-mms-base` lays it out)."""
    document = yaml.safe_load((REPO / "examples" / "tiny-mms.yaml").read_text())
    document["spec"]["model"] = {"path": str(mms.random_layout(tmp_path / "tiny-mms-base"))}
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(document))
    assert cli.main(["validate", str(job)]) == 0
    assert "activations" in capsys.readouterr().out
