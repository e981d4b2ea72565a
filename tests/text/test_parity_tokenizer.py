"""The `tokenizer` parity group passes on the fixtures and notices a mismatch."""

import json
import shutil

from glide_jax.tools import parity, parity_tokenizer


def test_all_checks_pass(fixtures_dir):
    checks = list(parity_tokenizer.checks(fixtures_dir))
    failing = [c.name for c in checks if not c.passed]
    assert not failing
    names = {c.name for c in checks}
    assert "tokenizer: glide padded_tokens (ctx 128)" in names
    assert "tokenizer: clip text_len (ctx 77)" in names
    assert sum(c.name.startswith("tokenizer: clip decode[") for c in checks) == 12


def test_detects_a_wrong_decode_and_missing_files(fixtures_dir, tmp_path):
    for name in ("tokenizer_prompts.json", "tokenizer_glide.npz"):
        shutil.copy(fixtures_dir / name, tmp_path / name)
    meta = json.loads((tmp_path / "tokenizer_prompts.json").read_text(encoding="utf-8"))
    meta["glide"]["decoded"][0] = "an oil painting of a cat"
    (tmp_path / "tokenizer_prompts.json").write_text(json.dumps(meta), encoding="utf-8")
    rows = {c.name: c for c in parity_tokenizer.checks(tmp_path)}
    assert not rows["tokenizer: glide decode[0]"].passed
    assert rows["tokenizer: glide decode[1]"].passed
    assert not rows["tokenizer: tokenizer_clip.npz"].passed


def test_cli_reports_all_passed(fixtures_dir):
    lines = []
    assert parity.main([str(fixtures_dir), "--only", "tokenizer"], out=lines.append) == 0
    assert lines[-1].endswith(" passed, 0 failed")
