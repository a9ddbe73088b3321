"""Run ``fastnst stylize`` many times back to back on a small folder and count runs that hang.

    python scripts/check_no_hang.py                  # 50 runs on 8 photos, 120 s limit each
    python scripts/check_no_hang.py --runs 20 --photos 44 --model checkpoints/wave.safetensors

Each run is a fresh process with the default backend (OpenVINO with one stream per core when
it is installed), a new output folder and the photos of ../shared/data/photos, so every run
makes its first inferences from several threads at once: the moment the OpenVINO start-up
deadlock struck (issue 15; ../shared/repro/openvino_first_infer_race.py). A run that does not
finish within ``--timeout`` is killed and counted as a hang. Exit code 1 if any run hung or failed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50, help="back-to-back runs (default 50)")
    parser.add_argument("--photos", type=int, default=8, help="photos per run (default 8)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a run counts as hung")
    parser.add_argument("--model", type=Path, default=REPO / "checkpoints" / "starry_night.safetensors")
    args = parser.parse_args()
    from fastnst.device import cpuinfo

    photos = sorted((SHARED / "photos").glob("*.jpg"))[: args.photos]
    if len(photos) < args.photos:
        print(f"needs {args.photos} photos in {SHARED / 'photos'} (the ../shared data folder)", file=sys.stderr)
        return 1
    hung, failed, seconds = 0, 0, []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for path in photos:
            shutil.copy(path, folder / path.name)
        for run in range(args.runs):
            out = Path(tmp) / f"out{run}"
            command = [sys.executable, "-m", "fastnst", "stylize", "-m", str(args.model), str(folder), "-o", str(out)]
            start = time.perf_counter()
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                hung += 1
                print(f"run {run + 1}: HUNG (killed after {args.timeout:.0f} s)", flush=True)
                continue
            seconds.append(time.perf_counter() - start)
            if done.returncode != 0:
                failed += 1
                print(f"run {run + 1}: failed with exit code {done.returncode}: {done.stderr.strip()[-300:]}")
            shutil.rmtree(out, ignore_errors=True)
    seconds.sort()
    median = seconds[len(seconds) // 2] if seconds else float("nan")
    print(f"{args.runs} runs of fastnst stylize on {len(photos)} photos ({args.model.name}, default backend), CPU "
          f"{cpuinfo('model name') or 'unknown'}: {hung} hung, {failed} failed; median {median:.2f} s, "
          f"slowest {seconds[-1] if seconds else float('nan'):.2f} s")
    return 1 if hung or failed else 0


if __name__ == "__main__":
    sys.exit(main())
