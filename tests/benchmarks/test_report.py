"""benchmarks/report.py turns benchmark JSONs into PERFORMANCE.md's tables."""

import json

import pytest

from benchmarks import report

H100 = "NVIDIA H100 80GB HBM3"


def _run(kind, date, rows=None, train=None, device=H100, smoke=False, dirty=False, **settings):
    run = {"benchmark": kind, "smoke": smoke, "device_kind": device, "date": date, "dirty": dirty,
           "commit": "0123456789abcdef" * 2 + "01234567", "xla_flags": "",
           "settings": {"dtype": "bfloat16", "attention_impl": "auto", **settings}}
    if rows is not None:
        run["results"] = rows
    if train is not None:
        run["train_step"] = train
    return run


def _sampling_row(workload, batch, seconds, predicted=None):
    row = {"workload": workload, "batch_size": batch, "s_per_batch": seconds, "images_per_s": batch / seconds}
    if predicted is not None:
        row["kernel_model"] = {"program": {"predicted_s": predicted}}
    return row


def _write(tmp_path, name, run):
    path = tmp_path / name
    path.write_text(json.dumps(run))
    return path


@pytest.fixture
def files(tmp_path):
    sampling = _run("sample_speed", "2026-12-01T10:00:00Z", rows=[
        _sampling_row("base", 1, 0.25, predicted=0.284),
        _sampling_row("base", 64, 6.0, predicted=6.67),
        _sampling_row("upsample", 64, 5.8),
    ])
    # A later run with XLA's attention: a variant, not the headline.
    xla = _run("sample_speed", "2026-12-02T10:00:00Z", rows=[_sampling_row("base", 64, 8.0)], attention_impl="xla")
    train = _run("train_speed", "2026-12-01T11:00:00Z", train={
        "batch_size": 64, "step_s": 0.14, "images_per_s": 457.1, "mfu": 0.52, "memory": {"peak_bytes": 26e9},
        "kernel_model": {"program": {"predicted_s": 0.1325}}}, dirty=True)
    return [_write(tmp_path, "sample_speed.json", sampling), _write(tmp_path, "sample_speed_xla.json", xla),
            _write(tmp_path, "train_speed.json", train)]


def _lines(table):
    return {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()[2:]}


def test_results_table_has_ratios_and_verdicts(files):
    lines = _lines(report.results_table(report.load_rows(files)))
    base1, base64 = lines["Base, 100 steps + CFG, batch 1"], lines["Base, 100 steps + CFG, batch 64"]
    assert "| 0.250 s |" in base1 and "22.5x eager, 8.5x compiled" in base1 and "| yes |" in base1
    # The default run is the headline even though the XLA-attention run is newer.
    assert "6.00 s (10.67 img/s)" in base64 and "4.2x eager, 2.4x compiled" in base64 and "| yes |" in base64
    upsample64 = lines["Upsampler fast27, batch 64"]
    assert "5.80 s (11.03 img/s)" in upsample64 and "**no**" in upsample64
    assert "| pending |" in lines["Upsampler fast27, batch 1"]
    train = lines["Base training step, batch 64, bf16 + AdamW"]
    assert "0.140 s (457 img/s), 52.0% MFU, 26.0 GB" in train and "2.9x eager" in train and "| yes |" in train
    assert f"{H100} (dirty tree)" in train and "| 2026-12-01 | 0123456 |" in train


def test_prediction_table_lists_every_program_and_setting(files):
    table = report.prediction_table(report.load_rows(files))
    assert "| base, batch 64 | default | 6 s | 6.67 s | 0.90 | sample_speed.json |" in table
    assert "| base, batch 64 | attention xla | 8 s | - | - | sample_speed_xla.json |" in table
    assert "| train, batch 64 | default | 0.14 s | 0.1325 s | 1.06 | train_speed.json |" in table


def test_newest_run_of_the_same_settings_wins(tmp_path, files):
    rerun = _run("sample_speed", "2026-12-03T10:00:00Z", rows=[_sampling_row("base", 64, 5.0)])
    lines = _lines(report.results_table(report.load_rows(files + [_write(tmp_path, "again.json", rerun)])))
    assert "5.00 s (12.80 img/s)" in lines["Base, 100 steps + CFG, batch 64"]


def test_smoke_and_foreign_runs(tmp_path):
    smoke = _write(tmp_path, "smoke.json", _run("sample_speed", "2026-12-01", rows=[_sampling_row("base", 1, 0.2)],
                                                device="cpu", smoke=True))
    with pytest.raises(report.ReportError, match="smoke.json: a --smoke run"):
        report.load_rows([smoke])
    table = report.results_table(report.load_rows([smoke], allow_smoke=True))
    assert "cpu (not an H100/H200, smoke)" in table


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read it as JSON"),
    (json.dumps({"benchmark": "flop_count"}), "'benchmark' is 'flop_count'"),
    (json.dumps({"benchmark": "train_speed", "smoke": False}), "missing key 'train_step'"),
])
def test_bad_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(report.ReportError, match=f"bad.json: .*{message}"):
        report.load_rows([path])


def test_main_prints_and_writes(files, tmp_path, capsys):
    out = tmp_path / "report.md"
    assert report.main([str(f) for f in files] + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() and "| Workload | Reference |" in printed
    assert report.main([str(tmp_path / "missing.json")]) == 1
    assert "missing.json: cannot read it" in capsys.readouterr().err


def test_partial_and_non_finite_runs_are_flagged(tmp_path):
    # A train run cut short during the matmul peak: the step is timed, MFU is not.
    train = _run("train_speed", "2026-12-01T11:00:00Z", train={
        "batch_size": 64, "step_s": 0.14, "images_per_s": 457.1, "memory": {"error": "x"}, "finite": False})
    train["partial"] = True
    lines = _lines(report.results_table(report.load_rows([_write(tmp_path, "t.json", train)])))
    row = lines["Base training step, batch 64, bf16 + AdamW"]
    assert "0.140 s (457 img/s), MFU pending, memory unknown" in row and "| - |" in row
    assert "(partial run, NON-FINITE output)" in row
