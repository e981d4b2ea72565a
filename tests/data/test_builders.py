"""How `builders.list_folder` lists a directory or a manifest (no TFDS build needed)."""

import io
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from glide_jax import config as config_lib
from glide_jax.data import builders


def _png(path, level=0):
    """Writes an 8x8 grey PNG at `path` (str, Path or bytes) and returns the path."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), level, np.uint8)).save(buffer, format="PNG")
    with open(path, "wb") as file:
        file.write(buffer.getvalue())
    return path


def _listed(root):
    """The listing of `root` as (relative path, captions) pairs."""
    return [(str(path.relative_to(root)), captions) for path, captions in builders.list_folder(root)]


@pytest.mark.parametrize("content, line", [
    ("path,caption\na.png,fine\nb.png,unquoted, comma here\n", 3),  # would keep only "unquoted"
    ("path,caption\na.png,\"never closed\nb.png,second\nc.png,third\n", 2),  # would swallow b and c
    ("path,caption\na.png,\"never closed\nb.png,\"quoted\"\n", 2),  # the open quote closes on a later line
    ("path,caption\na.png,\"two\nlines\"\nb.png,x,y\n", 4),  # lines counted past a two-line caption
])
def test_csv_rows_that_would_lose_captions_name_the_line(tmp_path, content, line):
    (tmp_path / "list.csv").write_text(content)
    with pytest.raises(config_lib.ConfigError, match=rf"list\.csv:{line}: "):
        builders.list_folder(tmp_path / "list.csv")


def test_csv_quoted_commas_quotes_and_line_breaks_stay_one_caption(tmp_path):
    (tmp_path / "list.csv").write_text('path,caption\na.png,"one, with a comma"\nb.png,"two\nlines"\n'
                                       'c.png,"she said ""hi"""\n\nd.png\n')
    assert builders.list_folder(tmp_path / "list.csv") == [
        (tmp_path / "a.png", ("one, with a comma",)), (tmp_path / "b.png", ("two\nlines",)),
        (tmp_path / "c.png", ('she said "hi"',)), (tmp_path / "d.png", ())]


def test_manifest_paths_are_normalised_before_rows_merge(tmp_path):
    rows = [("img/006.png", "first"), ("img/../img/006.png", "second"), ("./img/006.png", "third")]
    (tmp_path / "list.jsonl").write_text("".join(json.dumps({"path": p, "caption": c}) + "\n" for p, c in rows))
    (tmp_path / "list.csv").write_text("path,caption\n" + "".join(f"{p},{c}\n" for p, c in rows))
    for name in ("list.jsonl", "list.csv"):
        assert builders.list_folder(tmp_path / name) == [(tmp_path / "img" / "006.png", ("first", "second", "third"))]


def test_bad_json_is_reported_in_plain_words(tmp_path):
    (tmp_path / "list.jsonl").write_text('{"path": "a.png", "caption": "never closed}\n')
    with pytest.raises(config_lib.ConfigError) as info:
        builders.list_folder(tmp_path / "list.jsonl")
    assert str(info.value).endswith("list.jsonl:1: not a JSON object (Unterminated string starting at column 30)")


def test_names_that_are_not_utf8_are_skipped_with_a_warning(tmp_path, tiny_config, caplog):
    _png(tmp_path / "ok.png")
    _png(os.fsencode(tmp_path) + b"/caf\xe9.png")  # a Latin-1 name
    with caplog.at_level(logging.WARNING):
        listing = builders.scan_folder(tmp_path)
        config = tiny_config(dataset="folder", folder_path=str(tmp_path))
        builders.image_folder_config(config.data)  # hashed the name: UnicodeEncodeError
    assert listing.pairs == [(tmp_path / "ok.png", ())]
    assert [os.fsencode(p) for p in listing.misnamed] == [os.fsencode(tmp_path) + b"/caf\xe9.png"]
    assert any("caf\\xe9.png" in rec.getMessage() and "rename" in rec.getMessage() for rec in caplog.records)


def test_symlinked_folders_are_entered_and_loops_end(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    _png(root / "a.png")
    _png(root / "sub" / "b.png")
    _png(outside / "c.png")
    (outside / "c.txt").write_text("through a link")
    (root / "linked").symlink_to(outside)
    (outside / "back").symlink_to(root)  # a loop: root/linked/back is root
    (root / "again").symlink_to(root / "sub")  # the same real folder twice: listed once, by its own name
    assert _listed(root) == [("a.png", ()), ("linked/c.png", ("through a link",)), ("sub/b.png", ())]


def test_hidden_entries_and_non_files_are_skipped(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / ".hidden.png")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 macOS AppleDouble")
    for folder in (".thumbs", ".ipynb_checkpoints"):
        (tmp_path / folder).mkdir()
        _png(tmp_path / folder / "t.png")
    (tmp_path / "album.png").mkdir()  # a folder, not an image; its images are listed
    _png(tmp_path / "album.png" / "inner.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert _listed(tmp_path) == [("a.png", ()), ("album.png/inner.png", ())]


def test_caption_files_match_txt_in_any_case(tmp_path):
    for stem in ("a", "b", "c"):
        _png(tmp_path / f"{stem}.png")
    (tmp_path / "a.TXT").write_text("upper case")
    (tmp_path / "b.Txt").write_text("mixed case")
    (tmp_path / "b.txt").write_text("exact")
    (tmp_path / "c.text").write_text("not a caption file")
    assert _listed(tmp_path) == [("a.png", ("upper case",)), ("b.png", ("exact",)), ("c.png", ())]
