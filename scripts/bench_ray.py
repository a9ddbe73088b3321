"""`fastnst stylize --ray` against the local pipeline on one machine, side by side in one run.

    python scripts/bench_ray.py                    # 206 photos and 2,000 (about 15-20 min on 2 cores)
    python scripts/bench_ray.py --photos 16        # smoke run (a minute)

Both runners are whole ``fastnst stylize`` processes pinned to the same ``--cpus`` cores
(``--ray`` then starts a local Ray cluster of exactly those cores), on the photos of
../shared/data/photos, cycled through symlinks under a temporary folder for runs larger than
the folder. For each runner: the start-up cost (the wall time of a one-photo run: Python,
for --ray the cluster and its actor, the model load), and for each size the wall time,
photos/s over the whole run and photos/s after start-up ((N - 1) / (wall_N - wall_1)). The
outputs of the two runners are compared byte for byte. The two rates of --ray over local
are printed (target >= 0.8 on the 2,000-photo run), with what this machine's numbers mean
for a million photos on N such machines (model loads in parallel, one actor per machine).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MODEL = REPO / "checkpoints" / "starry_night.safetensors"
RUNNERS = ("local", "ray")


def library(photos: list[Path], count: int, folder: Path) -> Path:
    """``count`` photos under ``folder``: symlinks to ``photos``, cycled, each with a name of its own."""
    folder.mkdir(parents=True)
    for i in range(count):
        source = photos[i % len(photos)]
        (folder / f"{i:05d}_{source.name}").symlink_to(source.resolve())
    return folder


def run(runner: str, args: argparse.Namespace, inputs: Path, out: Path) -> float:
    """Wall seconds of one whole ``fastnst stylize`` process on the pinned cores; raises if it fails."""
    command = [sys.executable, "-m", "fastnst", "-q", "stylize", "-m", str(args.model), str(inputs), "-o", str(out),
               "--backend", args.backend]
    if runner == "ray":
        command.append("--ray")
    cores = sorted(os.sched_getaffinity(0))[:args.cpus]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{runner} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def same_outputs(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and not p.name.startswith("."))
    return bool(files) and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def project(per_actor: float, startup: float, photos: int = 1_000_000) -> None:
    """What ``photos`` would take on N machines like this one, one actor each, from the rates measured here."""
    print(f"\n{photos:,} photos on N machines like this one (one actor each at {per_actor:.2f} photos/s, "
          f"start-up {startup:.1f} s paid once, the actors' model loads in parallel):")
    for machines in (1, 4, 16, 64):
        hours = (startup + photos / (machines * per_actor)) / 3600
        print(f"  N = {machines:>3}: {hours:7.2f} h")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, nargs="+", default=[206, 2000], help="run sizes (default 206 2000)")
    parser.add_argument("--data", type=Path, default=SHARED / "photos", help="folder of photos to cycle through")
    parser.add_argument("--model", type=Path, default=MODEL, help="model file (default: bundled starry_night)")
    parser.add_argument("--backend", default="auto", help="--backend for both runners (default auto)")
    parser.add_argument("--cpus", type=int, default=2, help="cores both runners are pinned to (default 2)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one run may take")
    args = parser.parse_args()
    from fastnst.device import cpuinfo
    from fastnst.images import is_image_file

    photos = sorted(p for p in args.data.iterdir() if is_image_file(p.name))
    if not photos:
        raise SystemExit(f"no photos in {args.data}")
    print(f"CPU: {cpuinfo('model name') or 'unknown'}; pinned to {args.cpus} cores; model {args.model.name}, "
          f"backend {args.backend}; photos from {args.data} ({len(photos)})")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        tmp = Path(tmp)
        one = library(photos, 1, tmp / "in-1")
        run("local", args, one, tmp / "warm")  # fills the graph cache, so neither runner pays the export
        startup = {r: run(r, args, one, tmp / f"start-{r}") for r in RUNNERS}
        print(f"\nstart-up (a one-photo run): local {startup['local']:.2f} s, ray {startup['ray']:.2f} s "
              f"(Ray's own: {startup['ray'] - startup['local']:+.2f} s)")
        print(f"\n{'photos':>7} {'runner':>6} {'wall s':>8} {'photos/s':>9} {'after start-up':>15}")
        rates = {}
        for count in args.photos:
            inputs = library(photos, count, tmp / f"in-{count}")
            for runner in RUNNERS:
                wall = run(runner, args, inputs, tmp / f"out-{runner}-{count}")
                steady = (count - 1) / max(wall - startup[runner], 1e-9)
                rates[runner, count] = (count / wall, steady)
                print(f"{count:>7} {runner:>6} {wall:>8.1f} {count / wall:>9.2f} {steady:>15.2f}")
            whole, after = (rates["ray", count][i] / rates["local", count][i] for i in (0, 1))
            identical = same_outputs(tmp / f"out-local-{count}", tmp / f"out-ray-{count}")
            print(f"{count:>7}  ray / local: {whole:.2f}x whole run, {after:.2f}x after start-up; "
                  f"outputs byte-identical: {identical}")
        largest = max(args.photos)
        project(rates["ray", largest][1], startup["ray"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
