"""``fastnst video`` through the command line: frames, timestamps, sizes, rotation, sound, subtitles, bad inputs,
resuming after a kill, and the temporal blend, on tiny clips made here with PyAV."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from fastnst.cli import main
from fastnst.errors import ConfigError
from fastnst.files import TEMP_MARKER

from conftest import REPO, psnr

av = pytest.importorskip("av", reason="PyAV is not installed (pip install fastnst[video])")
pytestmark = pytest.mark.usefixtures("one_thread")

FPS = 24


# ---- making and reading clips --------------------------------------------------------------------------------

def pattern(t: int, size: tuple[int, int]) -> np.ndarray:
    """A smooth picture with a square that moves, different in every frame: (H, W, 3) uint8."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 200 // width + 20, y * 200 // height + 20, np.full_like(x, 60 + 4 * t)], -1)
    left = (3 * t) % max(1, width - 12)
    image[height // 3: height // 3 + 12, left:left + 12] = (230, 40, 40)
    return image.astype(np.uint8)


def write_clip(path: Path, frames: int = 12, size=(96, 64), pixels=pattern, audio: str | None = "aac",
               times: list[int] | None = None, time_base: Fraction | None = None, fmt: str | None = None,
               subtitles: str | None = None, crf: int = 10, pix_fmt: str = "yuv420p",
               chapters: list[dict] | None = None) -> Path:
    """A clip of ``frames`` frames at 24 fps (or at ``times`` in ``time_base`` ticks) with a 440 Hz tone."""
    output = av.open(str(path), "w", format=fmt)
    video = output.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt, video.options = size[0], size[1], pix_fmt, {"crf": str(crf)}
    if time_base is not None:
        video.time_base = video.codec_context.time_base = time_base
    sound = output.add_stream(audio, rate=48000) if audio else None
    if sound is not None:
        sound.layout = "mono"
    text = output.add_mux_stream(subtitles) if subtitles else None
    if chapters:
        output.set_chapters(chapters)
    output.start_encoding()
    for t in range(frames):
        frame = av.VideoFrame.from_ndarray(pixels(t, size), format="rgb24")
        frame.pts, frame.time_base = (times[t], time_base) if times else (t, Fraction(1, FPS))
        output.mux(video.encode(frame))
    output.mux(video.encode(None))
    if sound is not None:
        _write_tone(output, sound, frames / FPS)
    if text is not None:
        _write_subtitles(output, text, subtitles)
    output.close()
    return path


def _write_tone(output, sound, seconds: float) -> None:
    total = int(48000 * seconds)
    fmt = "u8" if sound.codec_context.name == "pcm_u8" else "fltp"
    for start in range(0, total, 1024):
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(start, min(total, start + 1024)) / 48000)
        samples = (tone * 127 + 128).astype(np.uint8) if fmt == "u8" else tone.astype(np.float32)
        chunk = av.AudioFrame.from_ndarray(samples[None], format=fmt, layout="mono")
        chunk.sample_rate, chunk.pts = 48000, start
        output.mux(sound.encode(chunk))
    output.mux(sound.encode(None))


def _write_subtitles(output, stream, codec: str) -> None:
    stream.time_base = Fraction(1, 1000)
    for start, words in ((0, b"first line"), (250, b"second line")):
        packet = av.Packet(struct.pack(">H", len(words)) + words if codec == "mov_text" else words)
        packet.pts = packet.dts = start
        packet.duration, packet.time_base, packet.stream = 200, stream.time_base, stream
        output.mux(packet)


def frames_of(path: Path) -> list:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def pixels_of(path: Path) -> list[np.ndarray]:
    return [frame.to_ndarray(format="rgb24") for frame in frames_of(path)]


def seconds_of(path: Path) -> list[float]:
    return [float(frame.pts * frame.time_base) for frame in frames_of(path)]


def audio_of(path: Path) -> tuple[list[bytes], np.ndarray]:
    """The first audio stream's packets (bytes) and decoded samples."""
    with av.open(str(path)) as container:
        packets = [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return packets, samples


def texts_of(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        if not container.streams.subtitles:
            return []
        return [bytes(p).lstrip(b"\x00\x0a\x0b") for p in container.demux(container.streams.subtitles[0])
                if p.size > 2]


def leftovers(folder: Path) -> list[Path]:
    """Temporaries and work folders a run must not leave behind."""
    return [p for p in folder.rglob("*") if p.name.startswith(TEMP_MARKER) or p.name.endswith(".fastnst-parts")]


def run(model: Path, *args) -> int:
    return main(["video", "-m", str(model), *map(str, args)])


# ---- the command and what it keeps ---------------------------------------------------------------------------

def test_help_imports_neither_pyav_opencv_nor_torch():
    code = ("import sys; from fastnst.cli import build_parser; build_parser(['video']); import fastnst; "
            "fastnst.VideoConfig; print(sorted(m for m in ('av', 'cv2', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert main(["video", "--help"]) == 0


def test_a_clip_keeps_its_frames_rate_size_and_sound(tmp_path, model_file, capsys):
    clip = write_clip(tmp_path / "clip.mp4", frames=14)
    out = tmp_path / "out"
    assert run(model_file, clip, "-o", out, "--backend", "torch", "--segment-seconds", "0.25") == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == "done 1, skipped 0 (already there), failed 0"
    result = out / "clip.mp4"
    frames = frames_of(result)
    assert len(frames) == 14 and (frames[0].width, frames[0].height) == (96, 64)
    assert np.allclose(seconds_of(result), seconds_of(clip), atol=1e-6)
    with av.open(str(result)) as a, av.open(str(clip)) as b:
        assert a.streams.video[0].average_rate == b.streams.video[0].average_rate == FPS
        assert abs(a.duration - b.duration) <= 1e6 / FPS
    packets, samples = audio_of(result)
    packets_in, samples_in = audio_of(clip)
    assert packets == packets_in and np.array_equal(samples, samples_in)
    styled = np.stack(pixels_of(result)).astype(float)
    assert psnr(styled, np.stack(pixels_of(clip))) < 20  # it was stylized, not copied
    assert leftovers(tmp_path) == []


def test_strength_zero_gives_back_the_input_in_the_input_container(tmp_path, model_file):
    """Colour conversion, orientation and timing round-trip: at strength 0 the network's output is the frame."""
    clips = [write_clip(tmp_path / "a.mkv"), write_clip(tmp_path / "b.mov", audio=None)]
    out = tmp_path / "out"
    assert run(model_file, *clips, "-o", out, "--backend", "torch", "--strength", "0", "--temporal-blend", "0",
               "--crf", "8", "--preset", "ultrafast") == 0
    for clip in clips:
        result = out / clip.name
        assert seconds_of(result) == pytest.approx(seconds_of(clip), abs=1e-3)
        for got, want in zip(pixels_of(result), pixels_of(clip), strict=True):
            assert psnr(got, want) > 38
    with av.open(str(out / "b.mov")) as container:
        assert [s.type for s in container.streams] == ["video"]


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_variable_frame_rate_timestamps_are_kept(tmp_path, model_file, suffix):
    times = [0, 40, 60, 140, 180, 190, 300, 341, 382, 500]  # ms: irregular gaps
    clip = write_clip(tmp_path / f"vfr{suffix}", frames=len(times), times=times, time_base=Fraction(1, 1000))
    out = tmp_path / "out"
    assert run(model_file, clip, "-o", out, "--backend", "torch", "--segment-seconds", "0.1",
               "--temporal-blend", "0.5") == 0
    assert seconds_of(clip) == pytest.approx([t / 1000 for t in times], abs=1e-6)
    assert seconds_of(out / clip.name) == pytest.approx([t / 1000 for t in times], abs=1e-3)


def test_odd_sizes_become_even_and_max_size_scales(tmp_path, model_file):
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.integers(30, 220, (17, 25, 1)), np.ones((4, 4, 3)))[:65, :97].astype(np.uint8)
    odd = write_clip(tmp_path / "odd.mkv", size=(97, 65), audio=None, pix_fmt="yuv444p",  # (4:2:0 must be even)
                     pixels=lambda t, size: blocks)  # grey: no colour for 4:2:0 to lose
    big = write_clip(tmp_path / "big.mkv", size=(96, 64), audio=None)
    out = tmp_path / "out"
    assert run(model_file, odd, "-o", out, "--backend", "torch", "--strength", "0", "--temporal-blend", "0",
               "--crf", "4") == 0
    assert run(model_file, big, "-o", out, "--backend", "torch", "--max-size", "48", "--temporal-blend", "0") == 0
    cropped = pixels_of(out / "odd.mkv")
    assert cropped[0].shape == (64, 96, 3)
    source = pixels_of(odd)[3]
    kept = psnr(cropped[3], source[:64, :96])  # the last row and column dropped, nothing moved or scaled
    assert kept > 35 and psnr(cropped[3], source[1:, 1:]) < 25
    assert pixels_of(out / "big.mkv")[0].shape == (32, 48, 3)


def rotate_clockwise_flag(path: Path, height: int) -> None:
    """Mark an MP4's video track as shown turned 90° clockwise: the tkhd matrix (0, 1, -1, 0) with the
    translation by the height, as QuickTime (and FFmpeg's muxer, for a 'rotate=90' tag) write it."""
    data = bytearray(path.read_bytes())
    box = data.index(b"tkhd")
    version = data[box + 4]
    matrix = box + 8 + (32 if version == 1 else 20) + 8 + 8
    values = (0, 1 << 16, 0, -(1 << 16), 0, 0, height << 16, 0, 1 << 30)
    data[matrix:matrix + 36] = struct.pack(">9i", *values)
    path.write_bytes(bytes(data))


def test_a_rotation_flag_is_applied_to_the_pixels(tmp_path, model_file):
    clip = write_clip(tmp_path / "phone.mp4", size=(96, 64))
    stored = pixels_of(clip)
    rotate_clockwise_flag(clip, 64)
    assert frames_of(clip)[0].rotation == -90  # FFmpeg reads it as a display matrix
    out = tmp_path / "out"
    assert run(model_file, clip, "-o", out, "--backend", "torch", "--strength", "0", "--temporal-blend", "0") == 0
    frames = frames_of(out / "phone.mp4")
    assert (frames[0].width, frames[0].height) == (64, 96) and frames[0].rotation == 0
    upright = np.rot90(stored[5], k=-1)  # turned clockwise, as a viewer sees it
    assert psnr(frames[5].to_ndarray(format="rgb24"), upright) > 35


@pytest.mark.skipif(not hasattr(av.container.OutputContainer, "add_mux_stream"),
                    reason="this PyAV cannot write subtitle packets (no add_mux_stream: a newer PyAV can)")
def test_subtitles_are_copied_where_the_container_holds_them(tmp_path, model_file, capsys):
    kept = write_clip(tmp_path / "kept.mkv", subtitles="subrip")
    dropped = write_clip(tmp_path / "dropped.webm", subtitles="subrip", fmt="matroska")  # WebM: no H.264, → MP4
    mp4 = write_clip(tmp_path / "movtext.mp4", subtitles="mov_text")
    out = tmp_path / "out"
    assert run(model_file, kept, dropped, mp4, "-o", out, "--backend", "torch", "--temporal-blend", "0") == 0
    assert texts_of(out / "kept.mkv") == texts_of(kept) == [b"first line", b"second line"]
    assert texts_of(out / "movtext.mp4") == texts_of(mp4) == [b"first line", b"second line"]
    assert texts_of(out / "dropped.mp4") == [] and audio_of(out / "dropped.mp4")[0] == audio_of(dropped)[0]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "subtitle" in line]
    assert len(warnings) == 1 and "dropped.webm" in warnings[0] and ".mp4 files cannot hold it" in warnings[0]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_chapters_are_kept(tmp_path, model_file, suffix):
    marks = [{"id": 1, "start": 0, "end": 6, "time_base": Fraction(1, FPS), "metadata": {"title": "Arrival"}},
             {"id": 2, "start": 6, "end": 12, "time_base": Fraction(1, FPS), "metadata": {"title": "Beach"}}]
    source = write_clip(tmp_path / f"trip{suffix}", chapters=marks)
    assert run(model_file, source, "-o", tmp_path / "out", "--temporal-blend", "0") == 0

    def spans(path):
        with av.open(str(path)) as container:
            return [(float(c["start"] * c["time_base"]), float(c["end"] * c["time_base"]), c["metadata"]["title"])
                    for c in container.chapters()]

    assert spans(tmp_path / "out" / f"trip{suffix}") == [(0.0, 0.25, "Arrival"), (0.25, 0.5, "Beach")]


def test_audio_mp4_cannot_hold_goes_into_mkv(tmp_path, model_file):
    clip = write_clip(tmp_path / "raw.webm", audio="pcm_u8", fmt="matroska")
    out = tmp_path / "out"
    assert run(model_file, clip, "-o", out, "--backend", "torch", "--temporal-blend", "0") == 0
    assert [p.name for p in out.iterdir()] == ["raw.mkv"]
    assert np.array_equal(audio_of(out / "raw.mkv")[1], audio_of(clip)[1])


def test_outputs_are_skipped_unless_overwrite_and_the_report_says_so(tmp_path, model_file, capsys):
    clip = write_clip(tmp_path / "clip.mp4", frames=6)
    out, report = tmp_path / "out", tmp_path / "report.jsonl"
    assert run(model_file, clip, "-o", out, "--backend", "torch", "--temporal-blend", "0") == 0
    before = (out / "clip.mp4").stat().st_ino
    assert run(model_file, clip, "-o", out, "--backend", "torch", "--report", report) == 0
    assert "done 0, skipped 1 (already there), failed 0" in capsys.readouterr().err
    assert (out / "clip.mp4").stat().st_ino == before
    assert json.loads(report.read_text()) == {"input": str(clip), "output": str(out / "clip.mp4"), "status": "skipped"}
    assert run(model_file, clip, "-o", out, "--backend", "torch", "--overwrite", "--report", report) == 0
    assert (out / "clip.mp4").stat().st_ino != before
    line = json.loads(report.read_text())
    assert (line["status"], line["frames"], line["resumed"], line["width"], line["height"]) == ("done", 6, 0, 96, 64)


def test_the_input_itself_is_never_the_output(tmp_path, model_file, capsys):
    clip = write_clip(tmp_path / "clip.mp4", frames=4)
    data = clip.read_bytes()
    assert run(model_file, clip, "-o", tmp_path, "--backend", "torch", "--overwrite") == 1
    assert "holds the input videos" in capsys.readouterr().err and clip.read_bytes() == data


def test_videos_are_found_as_photos_are(tmp_path, model_file, capsys):
    """Patterns work, an empty folder and a pattern matching nothing are each named, and a hard link to an
    input among the outputs is refused before anything is read."""
    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "a.mp4", frames=3, audio=None)
    (tmp_path / "clips" / "notes.txt").write_text("not a video")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.mp4").hardlink_to(write_clip(tmp_path / "b.mp4", frames=3, audio=None))
    code = run(model_file, tmp_path / "clips" / "*.mp4", tmp_path / "empty", tmp_path / "*.webm", tmp_path / "b.mp4",
               "-o", out, "--backend", "torch", "--temporal-blend", "0", "--overwrite")
    err = capsys.readouterr().err
    assert code == 1 and (out / "a.mp4").is_file()
    assert "empty: the folder holds no video file (readable suffixes: .mp4" in err
    assert "*.webm: the pattern matches no video file" in err
    assert "b.mp4: its output" in err and "is the input video" in err and "itself (a link)" in err


def test_a_folder_another_run_writes_into_is_refused(tmp_path, model_file, capsys):
    from fastnst.files import lock_folder
    from fastnst.stylize.pipeline import LOCK_NAME

    clip = write_clip(tmp_path / "clip.mp4", frames=3, audio=None)
    out = tmp_path / "out"
    out.mkdir()
    with lock_folder(out, LOCK_NAME):  # a photo or video run in progress there
        assert run(model_file, clip, "-o", out, "--backend", "torch") == 1
    assert "another fastnst run" in capsys.readouterr().err and not (out / "clip.mp4").exists()


# ---- bad inputs --------------------------------------------------------------------------------------------

def bad_inputs(folder: Path) -> dict[str, str]:
    """A file of each kind that cannot be stylized → a word its one-line reason must contain."""
    (folder / "notes.mp4").write_text("not a video\n" * 20)
    whole = write_clip(folder / "whole.mkv", frames=40).read_bytes()
    (folder / "cut-short.mkv").write_bytes(whole[: len(whole) // 2])
    (folder / "whole.mkv").unlink()
    faststart = folder / "fs.mp4"
    write_clip(faststart, frames=40)
    with av.open(str(faststart)) as source, av.open(str(folder / "cut-index.mp4"), "w",
                                                       options={"movflags": "faststart"}) as copy:
        streams = {s.index: copy.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                copy.mux(packet)
    data = (folder / "cut-index.mp4").read_bytes()
    (folder / "cut-index.mp4").write_bytes(data[: len(data) * 3 // 5])
    faststart.unlink()
    with av.open(str(folder / "song.m4a"), "w", format="mp4") as song:
        sound = song.add_stream("aac", rate=48000)
        sound.layout = "mono"
        _write_tone(song, sound, 0.3)
    codec = write_clip(folder / "codec.mkv").read_bytes()
    (folder / "unknown-codec.mkv").write_bytes(codec.replace(b"V_MPEG4/ISO/AVC", b"V_XXXXX/ISO/AVC"))
    (folder / "codec.mkv").unlink()
    with av.open(str(folder / "empty.mkv"), "w") as empty:  # MKV keeps a video track without frames
        stream = empty.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        sound = empty.add_stream("aac", rate=48000)
        sound.layout = "mono"
        empty.start_encoding()
        _write_tone(empty, sound, 0.3)
    return {"notes.mp4": "not a video", "cut-short.mkv": "truncated", "cut-index.mp4": "truncated",
            "song.m4a": "no video stream", "unknown-codec.mkv": "not supported", "empty.mkv": "no frames",
            "missing.mp4": "no such file"}


def test_each_bad_input_is_one_line_and_the_run_goes_on(tmp_path, model_file, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    reasons = bad_inputs(bad)
    good = write_clip(tmp_path / "good.mp4", frames=6)
    empty_folder = tmp_path / "nothing"
    empty_folder.mkdir()
    out = tmp_path / "out"
    inputs = [*(bad / name for name in reasons), empty_folder, good]
    assert run(model_file, *inputs, "-o", out, "--backend", "torch", "--segment-seconds", "0.2") == 1
    err = capsys.readouterr().err.splitlines()
    for name, word in reasons.items():
        lines = [line for line in err if name in line]
        assert len(lines) == 1 and lines[0].startswith("WARNING:") and word in lines[0], (name, lines)
    assert any("nothing" in line and "no video file" in line for line in err)
    assert err[-1] == f"done 1, skipped 0 (already there), failed {len(reasons) + 1}"
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4"]
    assert leftovers(tmp_path) == []


def test_a_folder_of_videos_is_mirrored(tmp_path, model_file, capsys):
    folder = tmp_path / "trip"
    (folder / "day2").mkdir(parents=True)
    write_clip(folder / "a.mp4", frames=3, audio=None)
    write_clip(folder / "day2" / "b.mkv", frames=3, audio=None)
    (folder / "readme.txt").write_text("not a video")
    single = write_clip(tmp_path / "c.mov", frames=3, audio=None)

    def written(out: Path) -> list[str]:
        return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name[0] != ".")

    options = ["--backend", "torch", "--temporal-blend", "0"]
    assert run(model_file, folder, "-o", tmp_path / "alone", *options) == 0  # the only input: its tree directly
    assert written(tmp_path / "alone") == ["a.mp4", "day2/b.mkv"]
    assert run(model_file, folder, single, "-o", tmp_path / "both", *options) == 0  # several: under its name
    assert written(tmp_path / "both") == ["c.mov", "trip/a.mp4", "trip/day2/b.mkv"]
    assert run(model_file, tmp_path / "both" / "trip", "-o", tmp_path / "both", *options) == 1
    assert "inside the output folder" in capsys.readouterr().err


# ---- resuming -----------------------------------------------------------------------------------------------

SLOW_RUN = """
import sys, time
import torch
torch.set_num_threads(1)  # as in this process (the one_thread fixture): the same arithmetic, the same pixels
from fastnst.stylize.stylizer import Stylizer
network = Stylizer.stylize_pixels
Stylizer.stylize_pixels = lambda self, pixels: (time.sleep(0.15), network(self, pixels))[1]
from fastnst.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_without_redoing_finished_segments(tmp_path, model_file, monkeypatch):
    from fastnst.stylize.stylizer import Stylizer

    clip = write_clip(tmp_path / "long.mp4", frames=48)
    out, reference = tmp_path / "out", tmp_path / "reference"
    # 6-frame segments; lossless H.264, as the encoder's choices differ from run to run (its output is not
    # reproducible, at least on tiny frames), while what it is given must be
    options = ["--backend", "torch", "--segment-seconds", "0.25", "--temporal-blend", "0.6", "--crf", "0"]
    command = [sys.executable, "-c", SLOW_RUN, "video", "-m", str(model_file), str(clip), "-o", str(out), *options]
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = out / ".long.mp4.fastnst-parts"
    deadline = time.monotonic() + 120
    try:
        while len(list(parts.glob("segment-*.json"))) < 2:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never finished two segments"
            time.sleep(0.02)
        child.kill()
    finally:
        child.kill()
        child.wait(timeout=60)
        child.stderr.close()
    assert not (out / "long.mp4").exists()
    finished = len(list(parts.glob("segment-*.json")))
    assert 2 <= finished < 8

    computed = []
    network = Stylizer.stylize_pixels
    monkeypatch.setattr(Stylizer, "stylize_pixels", lambda self, pixels: (computed.append(len(pixels)),
                                                                          network(self, pixels))[1])
    report = tmp_path / "report.jsonl"
    assert run(model_file, clip, "-o", out, *options, "--report", report) == 0
    record = json.loads(report.read_text())
    assert record["resumed"] == 6 * finished and record["frames"] == 48
    assert sum(computed) == 48 - 6 * finished  # finished segments were not stylized again
    assert leftovers(tmp_path) == [] and seconds_of(out / "long.mp4") == pytest.approx(seconds_of(clip))

    assert run(model_file, clip, "-o", reference, *options) == 0
    resumed, whole = pixels_of(out / "long.mp4"), pixels_of(reference / "long.mp4")
    assert all(np.array_equal(a, b) for a, b in zip(resumed, whole, strict=True))  # the blend went on seamlessly


def test_ctrl_c_keeps_finished_segments_and_leaves_nothing_half_written(tmp_path, model_file):
    import signal

    clip = write_clip(tmp_path / "clip.mp4", frames=24, audio=None)
    out = tmp_path / "out"
    command = [sys.executable, "-c", SLOW_RUN, "video", "-m", str(model_file), str(clip), "-o", str(out),
               "--backend", "torch", "--segment-seconds", "0.25"]
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts = out / ".clip.mp4.fastnst-parts"
    deadline = time.monotonic() + 120
    try:
        while not list(parts.glob("segment-*.json")):
            assert child.poll() is None and time.monotonic() < deadline, "the child never finished a segment"
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=60) == 130
        assert child.stderr.read().decode().strip().splitlines()[-1] == "fastnst video: interrupted"
    finally:
        child.kill()
        child.wait(timeout=60)
        child.stderr.close()
    assert not (out / "clip.mp4").exists() and list(parts.glob("segment-*.json"))
    assert [p for p in tmp_path.rglob(TEMP_MARKER + "*")] == []


def test_changed_options_start_the_video_over(tmp_path, model_file, caplog):
    from fastnst.video.resume import Segment, WorkFolder, work_folder

    clip = write_clip(tmp_path / "clip.mp4", frames=6, audio=None)
    out = tmp_path / "out"
    stale = WorkFolder(out / "clip.mp4", {"made": "with other options"})
    stale.segment_path(0).write_bytes(b"junk")
    stale.finish(Segment(0, 0, 6, 5), {})
    assert run(model_file, clip, "-o", out, "--backend", "torch", "--temporal-blend", "0") == 0
    assert len(frames_of(out / "clip.mp4")) == 6 and not work_folder(out / "clip.mp4").exists()


# ---- the temporal blend ---------------------------------------------------------------------------------------

SHIFT = 2  # pixels per frame


def moving_texture(seed: int = 1, frames: int = 16, size=(96, 64)):
    """Frames of a smooth texture sliding right by SHIFT pixels per frame, with fresh noise in each frame."""
    rng = np.random.default_rng(seed)
    width, height = size
    coarse = rng.random((height // 4 + 2, (width + frames * SHIFT) // 4 + 2, 3))
    texture = np.kron(coarse, np.ones((4, 4, 1)))[:height]
    noise = rng.normal(0, 6, (frames, height, width, 3))

    def pixels(t: int, _size) -> np.ndarray:
        left = (frames - t) * SHIFT
        return np.clip(texture[:, left:left + width] * 255 + noise[t], 0, 255).astype(np.uint8)

    return pixels


def shift_error(frames: list[np.ndarray]) -> float:
    """Warping error under the known motion, computed here with plain slicing (no flow, no interpolation)."""
    frames = [f.astype(np.float64) / 255 for f in frames]
    return float(np.mean([np.mean((now[:, SHIFT:] - before[:, :-SHIFT]) ** 2)
                          for before, now in zip(frames, frames[1:])]))


def test_the_temporal_blend_steadies_a_moving_clip(tmp_path, model_file):
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install fastnst[video])")
    clip = write_clip(tmp_path / "slide.mp4", frames=16, pixels=moving_texture(), audio=None)
    errors = {}
    for blend in ("0", "default"):
        out = tmp_path / blend
        choice = ["--temporal-blend", blend] if blend != "default" else []
        assert run(model_file, clip, "-o", out, "--backend", "torch", *choice, "--crf", "8") == 0
        errors[blend] = shift_error(pixels_of(out / "slide.mp4"))
    assert errors["default"] < 0.5 * errors["0"]


def test_the_blend_starts_afresh_at_a_scene_cut(tmp_path, model_file):
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install fastnst[video])")
    first, second = moving_texture(seed=1), moving_texture(seed=2)
    clip = write_clip(tmp_path / "cut.mp4", frames=12, audio=None,
                      pixels=lambda t, size: first(t, size) if t < 6 else 255 - second(t, size))
    outputs = {}
    for blend in ("0", "0.8"):
        assert run(model_file, clip, "-o", tmp_path / blend, "--backend", "torch", "--temporal-blend", blend,
                   "--crf", "8") == 0
        outputs[blend] = pixels_of(tmp_path / blend / "cut.mp4")
    assert psnr(outputs["0.8"][6], outputs["0"][6]) > 38  # nothing of the old shot is blended in
    assert psnr(outputs["0.8"][7], outputs["0"][7]) < 30  # while within a shot the blend is at work


def test_warping_error_matches_a_direct_computation():
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install fastnst[video])")
    from fastnst.video.temporal import pixel_grid, warping_error

    rng = np.random.default_rng(0)
    before = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    now = rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    coords = pixel_grid(now.shape) - np.array([3, 1], np.float32)  # each pixel came from 3 left, 1 up
    expected = np.mean(((now[1:, 3:].astype(float) - before[:-1, :-3]) / 255) ** 2)
    assert warping_error(before, now, coords) == pytest.approx(expected)
    half = pixel_grid(now.shape) + np.array([0.5, 0], np.float32)
    midpoints = (before[:, :-1].astype(float) + before[:, 1:]) / 2
    assert warping_error(before, now, half) == pytest.approx(np.mean(((now[:, :-1] - midpoints) / 255) ** 2))


def still_scene() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.clip(np.kron(rng.random((8, 12, 3)), np.ones((8, 8, 1))) * 255, 0, 255).astype(np.uint8)


def test_on_a_still_scene_flat_frames_blend_at_exactly_alpha():
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install fastnst[video])")
    from fastnst.video.temporal import TemporalBlender

    scene = still_scene()
    first, second = np.full((2, 64, 96, 3), 40, np.uint8), np.full((2, 64, 96, 3), 200, np.uint8)
    first[..., 1], second[..., 1] = 220, 10
    blender = TemporalBlender(0.25)
    assert np.array_equal(blender(scene, first[0]), first[0])
    out = blender(scene, second[0]).astype(float)
    expected = 0.75 * second[0] + 0.25 * first[0].astype(float)
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(out[inner] - expected[inner]).max() <= 1


def test_the_blend_keeps_more_stroke_contrast_than_an_average():
    pytest.importorskip("cv2", reason="OpenCV is not installed (pip install fastnst[video])")
    from fastnst.video.temporal import TemporalBlender

    rng = np.random.default_rng(1)
    strokes = rng.normal(128, 30, (2, 64, 96, 3)).clip(0, 255).astype(np.uint8)  # unrelated fine textures
    blender = TemporalBlender(0.5)
    blender(still_scene(), strokes[0])
    out = blender(still_scene(), strokes[1]).astype(float)[8:-8, 8:-8]
    average = (strokes[0].astype(float) + strokes[1])[8:-8, 8:-8] / 2
    own = strokes[1].astype(float)[8:-8, 8:-8]
    assert np.abs(out.mean(axis=(0, 1)) - own.mean(axis=(0, 1))).max() < 2  # the colour stays
    assert average.std() < 0.75 * own.std() and 0.85 * own.std() < out.std() <= own.std()


# ---- options and installation ----------------------------------------------------------------------------------

def test_every_look_and_speed_option_runs(tmp_path, model_file):
    clip = write_clip(tmp_path / "clip.mp4", frames=4, audio=None)
    common = [clip, "--device", "cpu", "--temporal-blend", "0"]
    assert run(model_file, *common, "-o", tmp_path / "a", "--backend", "torch", "--style", "test-style",
               "--preserve-color", "--stroke-scale", "2", "--dtype", "fp32", "--batch-size", "2") == 0
    assert run(model_file, *common, "-o", tmp_path / "b", "--style-mix", "test-style=1", "--streams", "2",
               "--preset", "ultrafast") == 0  # the default backend (OpenVINO where installed)
    for folder in ("a", "b"):
        assert len(frames_of(tmp_path / folder / "clip.mp4")) == 4


@pytest.mark.parametrize("args, words", [
    (["--crf", "60"], "--crf must be within 0..51"),
    (["--temporal-blend", "1"], "must be within 0..1"),
    (["--style", "a", "--style-mix", "a=1"], "not both"),
    (["--segment-seconds", "0"], "positive number of seconds"),
    (["--strength", "2"], "within 0..1"),
])
def test_bad_options_are_usage_errors(tmp_path, model_file, capsys, args, words):
    assert run(model_file, tmp_path / "x.mp4", "-o", tmp_path / "out", *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and err[-1].startswith("fastnst video: error:")  # after argparse's usage lines


def test_missing_pyav_or_opencv_names_the_extra(tmp_path, model_file, monkeypatch, capsys):
    from fastnst.video import VideoConfig, stylize_video

    clip = write_clip(tmp_path / "clip.mp4", frames=3, audio=None)
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ConfigError, match=r"pip install fastnst\[video\]"):
        stylize_video(VideoConfig(model=str(model_file), inputs=(str(clip),), output_dir=str(tmp_path / "a")))
    assert run(model_file, clip, "-o", tmp_path / "b", "--backend", "torch", "--temporal-blend", "0") == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "av", None)
    assert run(model_file, clip, "-o", tmp_path / "c", "--temporal-blend", "0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fastnst video: error: PyAV is not installed: pip install fastnst[video] (or pip install av)"]
    assert not os.path.exists(tmp_path / "c")
