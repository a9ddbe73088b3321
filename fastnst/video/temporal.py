"""Temporal stability at inference: blend each stylized frame with the previous one, moved by optical flow.

A feed-forward style network stylizes each frame on its own, and tiny changes
between frames (noise, compression, motion) change its strokes: the video
flickers. ``TemporalBlender`` keeps a share ``alpha`` (``--temporal-blend``) of
the previous *output* frame, warped onto the current one by the optical flow of
the *input* frames, wherever that flow can be trusted; elsewhere (things coming
into view, occlusions, a scene cut) the new stylized frame is taken as it is.
Because the previous output already holds its own predecessor, the blend is a
running average along motion paths that forgets at rate 1 - alpha per frame.

Averaging two frames whose strokes do not line up washes the strokes out (a
plain 0.6 blend raised the style loss by 60% in ``scripts/bench_video.py``). So
the blend is variance-preserving, after Heitz and Neyret's texture blending:
the detail (the blend minus its Gaussian blur of ``DETAIL_SIGMA`` pixels) is
scaled back up by ``((1-w)² + w²)^(-RESTORE/2)`` for a pixel blended with weight
w. RESTORE 1 would restore the contrast of two unrelated textures; consecutive
stylizations are partly alike, and 0.6 kept the style loss within 3% of
per-frame stylization at a third of its warping error (alpha 0.7, 640x360 pans
over two photos, starry_night).

* Flow: OpenCV's DIS flow (``cv2.DISOpticalFlow_create``) on grey copies of the
  input frames reduced to at most ``FLOW_SIDE`` pixels a side (fast at any
  resolution; the flow is scaled back up), in both directions.
* Reliability per pixel, as Ruder et al. (2016) do for video style transfer: the
  forward-backward check (following the backward flow and then the forward flow
  must come back to the start, within 1% of the motion plus half a pixel), the
  brightness check (the input pixel and its warped predecessor differ by at most
  ``MAX_GREY_CHANGE`` grey levels), and the source lying inside the frame. The
  mask is softened over a few pixels so the blend leaves no seams.
* Scene cuts: where less than ``MIN_RELIABLE`` of the frame passes the checks
  (or the mean grey change exceeds ``CUT_GREY_CHANGE``), nothing is blended.

``warping_error`` is the metric the blend is judged by (``scripts/bench_video.py``):
the mean squared difference between consecutive output frames after moving the
earlier one by a known motion. Frames are (H, W, 3) uint8 RGB throughout;
coordinates are (H, W, 2) float32 pixel positions (x, y) in the earlier frame.
OpenCV is imported only when a blender or a flow is made.
"""

from __future__ import annotations

import functools

import numpy as np

from fastnst.errors import ConfigError

FLOW_SIDE = 640  # the flow is computed on grey frames at most this many pixels a side
MAX_GREY_CHANGE = 24  # brightness check: grey levels (of 255) an input pixel may differ from its warped predecessor
MIN_RELIABLE = 0.3  # less of the frame than this trustworthy: a scene cut, no blend
CUT_GREY_CHANGE = 40.0  # mean absolute grey change (of 255) between frames that always counts as a cut
SOFTEN = 2.0  # the reliability mask's blur (Gaussian sigma, flow pixels)
DETAIL_SIGMA = 3.0  # the blend's detail is what a Gaussian blur of this sigma (pixels) removes
RESTORE = 0.6  # share (as a power) of the detail contrast lost to averaging that is put back


def import_cv2():
    """OpenCV, or a one-line ``ConfigError`` saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise ConfigError("--temporal-blend needs OpenCV: pip install fastnst[video] "
                          "(or opencv-python-headless), or pass --temporal-blend 0") from None
    return cv2


class TemporalBlender:
    """Blends each stylized frame with its warped predecessor; call it on the frames in order.

    ``alpha`` in 0..1 is the previous frame's share where the flow is reliable.
    ``state()``/``restore()`` carry the last input (grey) and output frame across
    a resumed run, so resuming blends exactly as an uninterrupted run does.
    """

    def __init__(self, alpha: float, flow_side: int = FLOW_SIDE) -> None:
        self.cv2 = import_cv2()
        self.alpha = float(alpha)
        self.flow_side = flow_side
        self.dis = self.cv2.DISOpticalFlow_create(self.cv2.DISOPTICAL_FLOW_PRESET_FAST)
        self.previous_grey: np.ndarray | None = None
        self.previous_out: np.ndarray | None = None
        self.cuts = 0  # scene cuts seen (logged by the pipeline)

    def __call__(self, content: np.ndarray, styled: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 input frame and its stylization → the blended (H, W, 3) uint8 output."""
        grey = small_grey(content, self.flow_side, self.cv2)
        out = styled
        if self.previous_grey is not None and self.previous_out is not None:
            coords, weight = self.reliable_flow(self.previous_grey, grey, styled.shape[:2])
            if weight is None:
                self.cuts += 1
            else:
                out = self.blend(styled, coords, weight * self.alpha)
        self.previous_grey, self.previous_out = grey, out
        return out

    def blend(self, styled: np.ndarray, coords: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """``styled`` mixed with the previous output moved to ``coords``, ``weight`` (H, W) of it, the detail's
        contrast restored (see the module's docstring) → (H, W, 3) uint8."""
        cv2 = self.cv2
        warped = cv2.remap(self.previous_out, coords, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        weight = weight[..., None]
        mixed = styled + weight * (warped.astype(np.float32) - styled)
        smooth = cv2.GaussianBlur(mixed, (0, 0), DETAIL_SIGMA)
        gain = ((1 - weight) ** 2 + weight ** 2) ** (-RESTORE / 2)
        return np.clip(smooth + gain * (mixed - smooth) + 0.5, 0, 255).astype(np.uint8)

    def reliable_flow(self, previous: np.ndarray, current: np.ndarray, shape: tuple[int, int]
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """Where each pixel of the current frame was in the previous one, and how far to trust it.

        ``previous``/``current``: small grey frames; ``shape`` (H, W) the full frame.
        Returns (H, W, 2) float32 source coordinates and an (H, W) float32 weight in
        0..1, or (coords, None) at a scene cut.
        """
        cv2 = self.cv2
        change = float(np.mean(np.abs(current.astype(np.int16) - previous)))
        if change > CUT_GREY_CHANGE:  # a scene cut: no flow to compute
            return pixel_grid(current.shape), None
        backward = self.dis.calc(current, previous, None)  # current pixel + backward = its place in previous
        forward = self.dis.calc(previous, current, None)
        source = pixel_grid(current.shape) + backward
        back_then_forth = backward + cv2.remap(forward, source, None, cv2.INTER_LINEAR,
                                               borderMode=cv2.BORDER_REPLICATE)
        motion = (backward ** 2).sum(-1) + (forward ** 2).sum(-1)
        consistent = (back_then_forth ** 2).sum(-1) <= 0.01 * motion + 0.5
        predecessor = cv2.remap(previous, source, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        steady = np.abs(predecessor.astype(np.int16) - current) <= MAX_GREY_CHANGE
        reliable = consistent & steady & inside(source, current.shape)
        if reliable.mean() < MIN_RELIABLE:
            return source, None
        weight = cv2.GaussianBlur(reliable.astype(np.float32), (0, 0), SOFTEN) * reliable
        height, width = shape
        scale = np.array([width / current.shape[1], height / current.shape[0]], np.float32)
        if current.shape != (height, width):
            backward = cv2.resize(backward, (width, height), interpolation=cv2.INTER_LINEAR) * scale
            weight = cv2.resize(weight, (width, height), interpolation=cv2.INTER_LINEAR)
        return pixel_grid((height, width)) + backward, weight

    def state(self) -> dict[str, np.ndarray]:
        """The frames the next blend needs (empty before the first frame)."""
        if self.previous_grey is None or self.previous_out is None:
            return {}
        return {"grey": self.previous_grey, "out": self.previous_out}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue after the frames ``state()`` described."""
        self.previous_grey, self.previous_out = state.get("grey"), state.get("out")


def small_grey(frame: np.ndarray, side: int, cv2) -> np.ndarray:
    """(H, W, 3) uint8 RGB → grey uint8 with its long side at most ``side`` (area-averaged)."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    height, width = grey.shape
    if max(height, width) <= side:
        return grey
    scale = side / max(height, width)
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def pixel_grid(shape: tuple[int, ...]) -> np.ndarray:
    """(H, W, 2) float32 coordinates (x, y) of every pixel of an image of ``shape`` (H, W, ...); read-only."""
    return _grid(int(shape[0]), int(shape[1]))


@functools.lru_cache(maxsize=4)
def _grid(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    grid = np.stack([xs, ys], axis=-1)
    grid.flags.writeable = False
    return grid


def inside(coords: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) bool: which (x, y) ``coords`` lie within an image of ``shape`` (H, W, ...), bilinear-safe."""
    x, y = coords[..., 0], coords[..., 1]
    return (x >= 0) & (y >= 0) & (x <= shape[1] - 1) & (y <= shape[0] - 1)


def bilinear(image: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``image`` (h, w, C) sampled at (H, W, 2) (x, y) ``coords`` with bilinear weights → (H, W, C) float64.

    Plain numpy (no OpenCV), so the metric does not share code with the blend it judges;
    coordinates outside the image are clamped to its edge (mask them with ``inside``).
    """
    image = np.asarray(image, np.float64)
    x = np.clip(coords[..., 0], 0, image.shape[1] - 1)
    y = np.clip(coords[..., 1], 0, image.shape[0] - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), image.shape[1] - 2).clip(0)
    y0 = np.minimum(np.floor(y).astype(np.int64), image.shape[0] - 2).clip(0)
    x1, y1 = np.minimum(x0 + 1, image.shape[1] - 1), np.minimum(y0 + 1, image.shape[0] - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def warping_error(previous: np.ndarray, current: np.ndarray, coords: np.ndarray,
                  valid: np.ndarray | None = None) -> float:
    """Mean squared difference (RGB scaled to 0–1) between ``current`` and ``previous`` warped onto it.

    ``previous``/``current``: (H, W, 3) frames (uint8 0–255); ``coords``: for each
    pixel of ``current``, its (x, y) position in ``previous`` (the known motion);
    pixels whose source lies outside ``previous`` are left out, and so are those
    ``valid`` (H, W) bool marks False (occlusions). NaN when no pixel is left.
    """
    mask = inside(coords, previous.shape)
    if valid is not None:
        mask &= valid
    if not mask.any():
        return float("nan")
    difference = (np.asarray(current, np.float64) - bilinear(previous, coords)) / 255.0
    return float((difference[mask] ** 2).mean())
