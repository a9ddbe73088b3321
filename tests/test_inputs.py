"""Input discovery, output paths that stay inside OUT_DIR, shards and the output-folder check."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastnst.errors import ConfigError, FastNSTError
from fastnst.files import TEMP_MARKER
from fastnst.stylize.inputs import (
    Shard,
    discover,
    output_suffix,
    parse_shard,
    prepare_output_dir,
    remove_temporaries,
    resolve_shard,
)

import image_corpus as corpus


def _tree(root: Path) -> dict[str, Path]:
    (root / "a" / "b").mkdir(parents=True)
    return {
        "top": corpus.make_rgb(root, "top.jpg"),
        "mid": corpus.make_rgb(root / "a", "mid.png"),
        "deep": corpus.make_rgb(root / "a" / "b", "deep.webp"),
        "anim": corpus.make_animated_gif(root / "a"),
    }


def _relative(found, out: Path) -> list[str]:
    return sorted(job.target.relative_to(out).as_posix() for job in found.jobs)


def test_folders_mirror_their_tree_under_their_own_name(tmp_path):
    files = _tree(tmp_path / "photos")
    (tmp_path / "photos" / "notes.txt").write_text("not an image suffix: ignored")
    out = tmp_path / "out"
    found = discover([str(tmp_path / "photos"), str(files["top"])], out)
    assert _relative(found, out) == ["photos/a/anim.png", "photos/a/b/deep.webp", "photos/a/mid.png",
                                     "photos/top.jpg", "top.jpg"]
    assert not found.failures
    png = discover([str(tmp_path / "photos")], out, fmt="png")
    assert all(job.target.suffix == ".png" for job in png.jobs)


def test_globs_mirror_below_their_fixed_folder(tmp_path, monkeypatch):
    _tree(tmp_path / "photos")
    out = tmp_path / "out"
    found = discover([str(tmp_path / "photos" / "**" / "*.png")], out)
    assert _relative(found, out) == ["a/mid.png"]
    monkeypatch.chdir(tmp_path / "photos")
    assert _relative(discover(["*/*.*"], out), out) == ["a/anim.png", "a/mid.png"]
    nothing = discover([str(tmp_path / "photos" / "*.tga")], out)
    assert not nothing.jobs and "matches no photo file" in nothing.failures[0][1]


def test_missing_inputs_are_jobs_that_fail_when_read(tmp_path):
    found = discover([str(tmp_path / "nope.jpg")], tmp_path / "out")
    assert [job.source.name for job in found.jobs] == ["nope.jpg"]


def test_names_cannot_lead_outside_the_output_folder(tmp_path, monkeypatch):
    inner = tmp_path / "deep" / "inner"
    inner.mkdir(parents=True)
    photo = corpus.make_rgb(tmp_path, "p.jpg")
    monkeypatch.chdir(inner)
    out = (tmp_path / "out").resolve()
    found = discover(["../../p.jpg", str(photo.resolve()), "../../*.jpg"], out)
    assert {job.target for job in found.jobs} == {out / "p.jpg"}  # one file named three ways: one job
    # A folder inside OUT_DIR that is a symlink to somewhere else is refused, not written through.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "photos").mkdir()
    corpus.make_rgb(tmp_path / "photos", "q.jpg")
    out.mkdir()
    (out / "photos").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "more").mkdir()  # two inputs: each folder's tree goes under its own name, out/photos/...
    escaped = discover([str(tmp_path / "photos"), str(tmp_path / "more")], out)
    reasons = dict(escaped.failures)
    assert not escaped.jobs and "outside the output folder" in reasons[str(tmp_path / "photos" / "q.jpg")]
    assert reasons[str(tmp_path / "more")].startswith("the folder holds no photo file (readable suffixes: .jpg")


def test_same_output_from_two_inputs_is_an_error_for_the_second(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    first, second = corpus.make_rgb(tmp_path / "x", "a.jpg"), corpus.make_rgb(tmp_path / "y", "a.jpg")
    png = corpus.make_rgb(tmp_path / "x", "a.png")
    found = discover([str(first), str(second), str(png)], tmp_path / "out", fmt="webp")
    assert [job.source for job in found.jobs] == [first]
    assert [source for source, _ in found.failures] == [str(second), str(png)]
    assert "already the output of" in found.failures[0][1]


def test_symlink_loops_end_and_the_output_folder_is_not_searched(tmp_path):
    files = _tree(tmp_path / "photos")
    (tmp_path / "photos" / "a" / "loop").symlink_to("..", target_is_directory=True)
    (tmp_path / "photos" / "self.jpg").symlink_to("self.jpg")
    out = tmp_path / "photos" / "styled"
    out.mkdir()
    corpus.make_rgb(out, "old-result.jpg")
    found = discover([str(tmp_path / "photos")], out.resolve())
    names = sorted(job.source.name for job in found.jobs)
    assert names == sorted([p.name for p in files.values()] + ["self.jpg"])


def test_shards_are_disjoint_and_cover_the_job(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(30):
        corpus.make_rgb(folder, f"{i:02d}.png", size=(4, 4))
    out = tmp_path / "out"
    whole = {job.target for job in discover([str(folder)], out).jobs}
    parts = [{job.target for job in discover([str(folder)], out, shard=Shard(i, 3)).jobs} for i in range(3)]
    assert set.union(*parts) == whole and sum(map(len, parts)) == len(whole) == 30
    assert all(parts)


def test_shard_parsing_and_torchrun_environment():
    assert parse_shard("2/4") == (2, 4) and parse_shard(" 0 / 1 ") == (0, 1)
    for bad in ("4/4", "1", "a/b", "0/0"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)
    assert resolve_shard(None, {}) == Shard(0, 1)
    assert resolve_shard(None, {"RANK": "3", "WORLD_SIZE": "8"}) == Shard(3, 8)
    assert resolve_shard((1, 2), {"RANK": "3", "WORLD_SIZE": "8"}) == Shard(1, 2)
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        resolve_shard(None, {"RANK": "x", "WORLD_SIZE": "2"})


def test_output_suffix():
    assert output_suffix(Path("a.JPEG"), "same") == ".jpeg"
    assert output_suffix(Path("a.gif"), "same") == ".png"
    assert output_suffix(Path("a.png"), "webp") == ".webp"


def test_output_folder_is_created_and_checked_before_any_work(tmp_path, unwritable_folder):
    assert prepare_output_dir(tmp_path / "new" / "out") == (tmp_path / "new" / "out").resolve()
    assert not list((tmp_path / "new" / "out").iterdir())  # the probe is gone
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FastNSTError, match="output folder cannot be written"):
        prepare_output_dir(blocker / "out")
    locked = unwritable_folder
    with pytest.raises(FastNSTError, match=r"locked: the output folder cannot be written \(Permission denied\)"):
        prepare_output_dir(locked)


def test_shards_remove_only_their_own_temporaries(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    names = [f"{i:02d}" for i in range(12)]
    temps = {n: out / "sub" / f"{TEMP_MARKER}{n}-0123abcd.jpg" for n in names}
    for path in temps.values():
        path.write_bytes(b"partial")
    keep = out / f"{TEMP_MARKER}report-0123abcd.jsonl"
    keep.write_text("")
    mine = {n for n in names if Shard(1, 3).owns(f"sub/{n}.jpg")}
    assert 0 < len(mine) < 12
    assert remove_temporaries(out, Shard(1, 3)) == len(mine)
    assert {n for n, p in temps.items() if not p.exists()} == mine and keep.exists()
    assert remove_temporaries(out, Shard()) == 12 - len(mine) + 1
