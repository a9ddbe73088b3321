"""Benchmarks of ``fastnst video``: temporal stability, style kept, speed, and the sound left untouched.

    python scripts/bench_video.py                      # the full measurement (about 30-60 min on 2 cores)
    python scripts/bench_video.py --seconds 1 --sizes 640x360 --sweep 0.7   # a quick smoke run (~5 min)
    python scripts/bench_video.py --temporal-model runs/starry_temporal.safetensors

Test clips are made here from a real photo of ../shared/data/content: a slow pan
and zoom over tubingen.jpg (so the exact motion between two frames is known),
``--seconds`` long at 24 fps, with a sine sweep as AAC audio; and the same with
a hard cut to chicago.jpg in the middle.

* ``stability``: the warping error (mean squared difference, RGB in 0–1, of each
  frame and its predecessor moved by the known motion; pixels coming from outside
  the frame left out; the pair across the cut left out) of per-frame stylization,
  of ``--temporal-blend A`` for each A of ``--sweep``, and of ``--temporal-model``
  (a model trained with a temporal loss) when given; with the frames' style loss
  (Caffe VGG19, relu1_1,relu2_1,relu3_1, the model's style image) relative to
  per-frame's. Targets: >= 2x lower warping error than per-frame, style loss
  within 10% of per-frame's. On the cut clip, the first frame after the cut must
  match per-frame's (the blend starts afresh; PSNR >= 38 dB, two encodes apart).
  Every variant runs the whole pipeline; the network's output for a frame is
  computed once per model and reused by the variants (``Memo``).
* ``speed``: frames/s of the whole pipeline (default backend) at each of
  ``--sizes`` with ``--temporal-blend 0`` and with the default blend, against the
  network alone on the same frames already decoded, with what decoding, the
  blend and encoding cost alone as shares of the network's time. Target: the
  pipeline without the blend >= 90% of the network-only rate (I/O hidden). On a
  2-core machine the network uses every core, so the blend's own work (optical
  flow) cannot hide: it shows as its share.
* ``audio``: the output's decoded audio samples equal the input's (packets are
  copied) and the durations differ by at most one frame.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from fastnst.images import psnr

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FPS = 24


def parse_args(argv=None) -> argparse.Namespace:
    from fastnst.video.config import DEFAULT_TEMPORAL_BLEND

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Sections: stability, speed, audio.")
    p.add_argument("--model", default=str(REPO / "checkpoints" / "starry_night.safetensors"))
    p.add_argument("--temporal-model", metavar="PATH", help="a model trained with --temporal-weight, compared too")
    p.add_argument("--style-image", help="style image for the style loss (default: from the model's config)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the test clips (default 5)")
    p.add_argument("--size", default="640x360", help="size of the stability clips (default 640x360)")
    p.add_argument("--sizes", default="640x360,1280x720", help="sizes timed by the speed section")
    p.add_argument("--sweep", default=f"0.5,{DEFAULT_TEMPORAL_BLEND:g},0.85", help="--temporal-blend values compared")
    p.add_argument("--repeats", type=int, default=2, help="speed: runs of each variant, the best counts (default 2)")
    p.add_argument("--only", choices=("stability", "speed", "audio"), action="append", help="run only these")
    p.add_argument("--out", help="keep the clips and outputs in this folder (default: a temporary one)")
    return p.parse_args(argv)


def size_of(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


# ---- test clips with known motion -------------------------------------------------------------------------------

def motion(t: int, frames: int, photo_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float]:
    """(scale, x0, y0) of frame ``t``: output pixel (u, v) shows photo point (x0 + s(u + .5), y0 + s(v + .5))."""
    progress = t / max(1, frames - 1)
    fit = min(photo_size[0] / size[0], photo_size[1] / size[1])
    scale = fit * (0.9 - 0.15 * progress)  # a slow zoom in
    span_x, span_y = photo_size[0] - scale * size[0], photo_size[1] - scale * size[1]
    return scale, span_x * (0.1 + 0.8 * progress), span_y * (0.5 - 0.3 * progress)


def render(photo, params, size):
    from PIL import Image

    scale, x0, y0 = params
    return np.asarray(photo.transform(size, Image.Transform.AFFINE, (scale, 0, x0, 0, scale, y0),
                                      resample=Image.Resampling.BICUBIC))


def known_coords(now, before, size) -> np.ndarray:
    """(H, W, 2): where each pixel of the frame with motion ``now`` lies in the frame with motion ``before``."""
    from fastnst.video.temporal import pixel_grid

    grid = pixel_grid((size[1], size[0])).astype(np.float64) + 0.5
    scale, x0, y0 = now
    scale_b, x0_b, y0_b = before
    x = (x0 + scale * grid[..., 0] - x0_b) / scale_b - 0.5
    y = (y0 + scale * grid[..., 1] - y0_b) / scale_b - 0.5
    return np.stack([x, y], -1).astype(np.float32)


def make_clip(path: Path, size, seconds: float, cut: bool) -> list:
    """Write the test clip; return each frame's motion (None for the first frame after a cut)."""
    import av
    from PIL import Image

    frames = max(2, round(seconds * FPS))
    photos = [Image.open(SHARED / "content" / name).convert("RGB") for name in ("tubingen.jpg", "chicago.jpg")]
    output = av.open(str(path), "w")
    video = output.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt, video.options = size[0], size[1], "yuv420p", {"crf": "12"}
    audio = output.add_stream("aac", rate=48000)
    audio.layout = "mono"
    params = []
    for t in range(frames):
        second_half = cut and t >= frames // 2
        photo = photos[1] if second_half else photos[0]
        local = t - frames // 2 if second_half else t
        params.append(("B" if second_half else "A", motion(local, frames, photo.size, size)))
        frame = av.VideoFrame.from_ndarray(render(photo, params[-1][1], size), format="rgb24")
        frame.pts = t
        output.mux(video.encode(frame))
    output.mux(video.encode(None))
    rate, total = 48000, int(48000 * frames / FPS)
    phase = 2 * np.pi * np.cumsum(np.linspace(200, 2000, total)) / rate  # a sine sweep
    for start in range(0, total, 1024):
        chunk = (0.3 * np.sin(phase[start:start + 1024])).astype(np.float32)[None]
        samples = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        samples.sample_rate, samples.pts = rate, start
        output.mux(audio.encode(samples))
    output.mux(audio.encode(None))
    output.close()
    return params


def decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# ---- stability ------------------------------------------------------------------------------------------------

def warping_errors(frames, params, size) -> float:
    from fastnst.video.temporal import warping_error

    errors = [warping_error(frames[t - 1], frames[t], known_coords(params[t][1], params[t - 1][1], size))
              for t in range(1, len(frames)) if params[t][0] == params[t - 1][0]]
    return float(np.mean(errors))


class StyleLoss:
    """The style loss of frames under the bundled models' loss network (Caffe VGG19, relu1_1..relu3_1)."""

    def __init__(self, model: str, style_image: str | None) -> None:
        import torch

        from fastnst.checkpoint import read_info
        from fastnst.images import load_style_image
        from fastnst.losses import LossSpec, content_targets, perceptual_losses, style_targets
        from fastnst.pretrained import load_loss_network
        from fastnst.train.config import model_style_images

        weights = SHARED / "vgg" / "vgg19_caffe_block1-3.pth"
        self.spec = LossSpec(vgg="vgg19", vgg_weights=str(weights), style_layers="relu1_1,relu2_1,relu3_1",
                             content_layers="relu2_2", content_weight=1, style_weight=1)
        config = read_info(model).config
        style = style_image or model_style_images(config)[0]
        self.vgg = load_loss_network(self.spec)
        self.grams = style_targets(self.vgg, [load_style_image(style, config.get("style_size"))], self.spec)
        self.torch, self.content_targets, self.losses = torch, content_targets, perceptual_losses

    def __call__(self, frames: list[np.ndarray], limit: int = 24) -> float:
        torch = self.torch
        picked = frames[:: max(1, len(frames) // limit)]
        values = []
        with torch.no_grad():
            for frame in picked:
                image = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
                content = self.content_targets(self.vgg, image, self.spec)
                values.append(float(self.losses(self.vgg, image, content, self.grams, self.spec)["style"]))
        return float(np.mean(values))


class Memo:
    """A ``Stylizer`` that computes each distinct frame once: the variants of one clip share the network's work
    (everything else of the pipeline runs for each)."""

    def __init__(self, stylizer) -> None:
        self.stylizer, self.cache = stylizer, {}

    def __getattr__(self, name: str):
        return getattr(self.stylizer, name)

    def stylize_pixels(self, pixels: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(pixels.tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.stylizer.stylize_pixels(pixels)
        return self.cache[key]


def stylized(clip: Path, out: Path, model: str, blend: float, stylizer=None) -> list[np.ndarray]:
    from fastnst.video import VideoConfig, stylize_video

    config = VideoConfig(model=model, inputs=(str(clip),), output_dir=str(out), temporal_blend=blend, overwrite=True)
    report = stylize_video(config, stylizer)
    if report.failed:
        raise SystemExit(f"stylizing {clip} failed: {report.failed[0][1]}")
    return decoded(out / clip.name)


def stability(args, work: Path) -> None:
    from fastnst.stylize import Stylizer

    size = size_of(args.size)
    blends = [float(a) for a in args.sweep.split(",") if a.strip()]
    losses = StyleLoss(args.model, args.style_image)
    print(f"\n== stability: {args.seconds:g} s at {size[0]}x{size[1]}, {FPS} fps, pan and zoom over tubingen.jpg "
          f"(warping error: MSE of RGB in 0-1 after the known motion)")
    for cut in (False, True):
        clip = work / f"clip{'-cut' if cut else ''}.mp4"
        params = make_clip(clip, size, args.seconds, cut)
        variants = [("per-frame", args.model, 0.0)] + [(f"--temporal-blend {a:g}", args.model, a) for a in blends]
        if args.temporal_model:
            variants.append(("temporal model, per-frame", args.temporal_model, 0.0))
        stylizers = {model: Memo(Stylizer(model)) for model in {model for _, model, _ in variants}}
        outputs = {name: stylized(clip, work / f"out-{i}", model, a, stylizers[model])
                   for i, (name, model, a) in enumerate(variants)}
        reference = outputs["per-frame"]
        base_error, base_style = warping_errors(reference, params, size), losses(reference)
        print(f"\n{'with a hard cut' if cut else 'one shot'}: input warping error "
              f"{warping_errors(decoded(clip), params, size):.2e}")
        print(f"{'variant':<28} {'warping error':>14} {'vs per-frame':>13} {'style loss':>11} {'vs per-frame':>13}  "
              "targets (<= 0.5x, <= 1.10x)")
        for name, frames in outputs.items():
            error, style = warping_errors(frames, params, size), losses(frames)
            met = "" if name == "per-frame" else ("met" if error <= base_error / 2 and style <= base_style * 1.1
                                                  else "NOT met")
            print(f"{name:<28} {error:>14.3e} {error / base_error:>12.2f}x {style:>11.4g} "
                  f"{style / base_style:>12.3f}x  {met}")
        if cut:
            after = next(t for t in range(1, len(params)) if params[t][0] != params[t - 1][0])
            for name, frames in outputs.items():
                if name.startswith("--temporal-blend"):
                    print(f"first frame after the cut, {name} vs per-frame: PSNR "
                          f"{psnr(frames[after], reference[after]):.1f} dB (target >= 38: the blend starts afresh)")


# ---- speed ----------------------------------------------------------------------------------------------------

def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def network_only(stylizer, frames: list[np.ndarray], streams: int) -> None:
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda frame: stylizer.stylize_pixels(frame[None]), frames))


def decode_only(clip: Path) -> None:
    from fastnst.video import io

    for _ in io.read_frames(io.probe(clip, None)):
        pass


def encode_only(clip: Path, frames: list[np.ndarray], out: Path) -> None:
    from fastnst.video import io
    from fastnst.video.config import DEFAULT_CRF

    info = io.probe(clip, None)
    writer = io.SegmentWriter(out / "encode-only.mp4", info, DEFAULT_CRF, "medium")
    for pts, frame in enumerate(frames):
        writer.write(pts * info.step, frame)
    writer.close()


def blend_only(frames: list[np.ndarray]) -> None:
    from fastnst.video.config import DEFAULT_TEMPORAL_BLEND
    from fastnst.video.temporal import TemporalBlender

    blender = TemporalBlender(DEFAULT_TEMPORAL_BLEND)
    for frame in frames:
        blender(frame, frame)


def speed(args, work: Path) -> None:
    from fastnst.stylize import Stylizer
    from fastnst.video.config import DEFAULT_TEMPORAL_BLEND

    stylizer = Stylizer(args.model)
    backend = stylizer.backend
    streams = backend.default_streams if backend.concurrent else 1
    backend.set_streams(streams)
    backend.set_streams = lambda n: None  # compiled once for ``streams`` before timing, not again in each run
    print(f"\n== speed: backend {backend.name}, {streams} stream(s), best of {args.repeats} interleaved runs; "
          f"target: the pipeline without the blend >= 90% of the network alone (default --temporal-blend "
          f"{DEFAULT_TEMPORAL_BLEND:g})")
    print(f"{'size':>10} {'network f/s':>12} {'pipeline, blend 0':>18} {'pipeline, default':>18} {'decode':>7} "
          f"{'blend':>7} {'encode':>7}  (decode/blend/encode alone: share of the network's time)")
    for text in args.sizes.split(","):
        clip = work / f"speed-{text}.mp4"
        make_clip(clip, size_of(text), args.seconds, cut=False)
        frames = decoded(clip)
        network_only(stylizer, frames[:streams], streams)  # warm-up: compile for this size
        runs = {"network": (network_only, stylizer, frames, streams),
                "plain": (stylized, clip, work / "speed-out", args.model, 0.0, stylizer),
                "blend": (stylized, clip, work / "speed-out", args.model, DEFAULT_TEMPORAL_BLEND, stylizer),
                "decode": (decode_only, clip), "blending": (blend_only, frames),
                "encode": (encode_only, clip, frames, work)}
        best = {name: float("inf") for name in runs}
        for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits every variant
            for name, (function, *inputs) in runs.items():
                best[name] = min(best[name], timed(function, *inputs))
        count, network = len(frames), best["network"]
        print(f"{text:>10} {count / network:>12.2f} {count / best['plain']:>9.2f} ({network / best['plain']:>4.0%}) "
              f"{count / best['blend']:>9.2f} ({network / best['blend']:>4.0%}) "
              + " ".join(f"{best[name] / network:>7.1%}" for name in ("decode", "blending", "encode"))
              + ("  met" if network / best["plain"] >= 0.9 else "  NOT met"))


# ---- audio ----------------------------------------------------------------------------------------------------

def audio(args, work: Path) -> None:
    import av

    clip = work / "audio.mp4"
    make_clip(clip, (320, 180), args.seconds, cut=False)
    out = work / "audio-out"
    stylized(clip, out, args.model, 0.0)

    def samples_and_duration(path: Path):
        with av.open(str(path)) as container:
            pcm = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
            return pcm, container.duration / 1e6

    (a, da), (b, db) = samples_and_duration(clip), samples_and_duration(out / clip.name)
    same = a.shape == b.shape and np.array_equal(a, b)
    print(f"\n== audio: decoded samples {'bit-exact' if same else 'DIFFERENT'} ({a.shape[1]} vs {b.shape[1]}); "
          f"duration {da:.3f} s in, {db:.3f} s out (|diff| {abs(da - db) * 1000:.1f} ms, one frame "
          f"{1000 / FPS:.1f} ms): {'met' if same and abs(da - db) <= 1 / FPS else 'NOT met'}")


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # each line as it is measured, also into a pipe or a log file
    if not SHARED.is_dir():
        print(f"bench_video: the real data folder {SHARED} is absent (it holds the photos the clips are made of)",
              file=sys.stderr)
        return 1
    from fastnst.device import cpuinfo

    print(f"CPU: {cpuinfo('model name') or 'unknown'}; model {args.model}; clips {args.seconds:g} s")
    sections = args.only or ["stability", "speed", "audio"]
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        work = Path(args.out or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name, section in (("stability", stability), ("speed", speed), ("audio", audio)):
            if name in sections:
                section(args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
