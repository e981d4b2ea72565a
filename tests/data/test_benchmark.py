"""The input-pipeline benchmark runs end to end in --smoke mode."""

import importlib.util
import json
import pathlib

BENCHMARK = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "input_pipeline.py"


def test_input_pipeline_benchmark_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("input_pipeline_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "result.json"
    assert module.main(["--smoke", "--threads", "2", "--data_dir", str(tmp_path / "tfds"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    assert [r["kind"] for r in result["runs"]] == ["base", "upsample"]
    assert [r["image_size"] for r in result["runs"]] == [64, 256]
    assert all(r["examples_per_s"] > 0 and r["batches"] == 3 for r in result["runs"])
