"""``fastnst video``: stylize video files frame by frame, with sound, resumable, optionally steadied over time.

* ``config.VideoConfig`` — every option, validated once;
* ``pipeline.stylize_video`` — the run: decode, stylize, blend, encode at once, segment by segment;
* ``io`` — PyAV: probing, decoding upright RGB frames, H.264 segments, remuxing audio and subtitles;
* ``temporal`` — the optical-flow blend with the previous frame, and the warping-error metric;
* ``resume`` — the hidden work folder of finished segments that lets a killed run resume.

PyAV and OpenCV (``pip install fastnst[video]``) are imported only when a video
run starts, never by ``import fastnst`` or the command line's ``--help``.
"""

from fastnst.video.config import VideoConfig
from fastnst.video.pipeline import VideoReport, stylize_video

__all__ = ["VideoConfig", "VideoReport", "stylize_video"]
