#!/bin/bash
# The bundled styles on a lent GPU machine (the `device` tool, DEVELOPERS.md), in one call of under 10 minutes:
#
#   scripts/device_bundled.sh prepare        # here: .gpu/ gets the data the call needs (../shared does not travel)
#   device run: bash scripts/device_bundled.sh run    carry [".gpu"]    timeout_s 590
#
# `run` trains, side by side on the one GPU, (fresh) scripts/train_bundled.py's whole recipe from the
# rain_princess trunk and (cont) its stage 4 alone from checkpoints/all_styles.safetensors, both sized by
# --minutes to end together; then scripts/eval_styles.py measures the bar for each style's fresh, cont and
# bundled (old) single-style files on the 20 held-out photos (the 100-evaluation L-BFGS once per photo).
# Back in $OUT: both all-styles files, results.tgz (logs, quality.json per style, contact sheets in
# eval/sheets/) and up to 45 MB of the optimizations' images (lbfgs.tar.a*, for eval_styles' cache here).
set -u
case "${1:-}" in
prepare)
  here=$(cd "$(dirname "$0")/.." && pwd) shared=$(cd "$(dirname "$0")/../../shared" && pwd) || exit 1
  grep -qx '/.gpu/' "$here/.git/info/exclude" || echo /.gpu/ >> "$here/.git/info/exclude"
  rm -rf "$here/.gpu" && mkdir -p "$here/.gpu/shared/data/style" "$here/.gpu/shared/data/content" || exit 1
  python=${PYTHON:-$here/.venv/bin/python}
  cp -r "$shared/data/photos" "$shared/data/vgg" "$here/.gpu/shared/data/"
  # The bundled styles' paintings and the classic photos of the style ratios, as the scripts name them.
  for s in $(cd "$here/scripts" && "$python" -c "from train_bundled import STYLES; print(*STYLES)"); do
    cp "$shared/data/style/$s.jpg" "$here/.gpu/shared/data/style/"
  done
  for c in $(cd "$here/scripts" && "$python" -c "from eval_styles import CLASSIC; print(*CLASSIC)"); do
    cp "$shared/data/content/$c.jpg" "$here/.gpu/shared/data/content/"
  done
  (cd "$here" && "$python" -m fastnst convert "$shared/data/models/rain_princess.pth" -o .gpu/rain_princess.safetensors)
  du -sh "$here/.gpu"   # with the checkout it must stay under the call's 64 MiB
  exit ;;
run) ;;
*) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac

T0=$(date +%s)
END=${END:-545}            # seconds after the start by which everything is packed
MINUTES=${MINUTES:-5.3}    # training, both runs
DEVICE=${DEVICE:-cuda}
EVAL=${EVAL:-}             # more eval_styles arguments (a CPU dry run makes it small)
OUT=${OUT:?the device machine sets OUT}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
# The model files record their held-out photos under /work/shared, and the scripts look for ../shared.
mkdir -p /work && { [ -e /work/shared ] || ln -s "$PWD/.gpu/shared" /work/shared; }
[ -e ../shared ] || ln -s "$PWD/.gpu/shared" ../shared
S=/work/shared/data
R=${R:-/tmp/gpu}
mkdir -p "$R/eval/sheets" "$R/models"
# The photo workers hand batches over in /dev/shm; a small one (a container's 64 MB) would stop them.
[ "$(df --output=size -k /dev/shm | tail -n 1)" -lt 4000000 ] && mount -o remount,size=8G /dev/shm 2>/dev/null
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; df -h /dev/shm;
  python3 -c "import torch, sys; print(torch.__version__, sys.version)"; } > "$R/env.txt" 2>&1
( while sleep 15; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; done ) \
    > "$R/smi.log" 2>&1 &
SMI=$!
COMMON="--photos $S/photos --styles $S/style --vgg-weights $S/vgg/vgg19_caffe_block1-3.pth
        --trunk .gpu/rain_princess.safetensors --device $DEVICE --minutes $MINUTES"
LIMIT=$(( ${MINUTES%.*} * 60 + 60 ))
timeout $LIMIT python3 scripts/train_bundled.py $COMMON --out "$R/fresh" --workers 2 > "$R/fresh.out" 2>&1 &
FRESH=$!
timeout $LIMIT python3 scripts/train_bundled.py $COMMON --out "$R/cont" --workers 3 \
    --joint-from checkpoints/all_styles.safetensors > "$R/cont.out" 2>&1 &
wait $FRESH $!
echo "training done at $(( $(date +%s) - T0 )) s" >> "$R/env.txt"
EVALS=""
for painting in "$S"/style/*.jpg; do   # the bundled styles: prepare copied their paintings alone
  s=$(basename "$painting" .jpg)
  cp "checkpoints/$s.safetensors" "$R/models/old-$s.safetensors"
  for run in fresh cont; do
    [ -f "$R/$run/joint/$s.safetensors" ] && cp "$R/$run/joint/$s.safetensors" "$R/models/$run-$s.safetensors"
  done
  timeout $(( END - 15 - ($(date +%s) - T0) )) python3 scripts/eval_styles.py "$R"/models/*-$s.safetensors \
      --out "$R/eval/$s" --sheets "$R/eval/sheets" --device $DEVICE $EVAL > "$R/eval/$s.out" 2>&1 &
  EVALS="$EVALS $!"
done
wait $EVALS
echo "eval done at $(( $(date +%s) - T0 )) s" >> "$R/env.txt"
python3 -c "import json, pathlib, sys; print(json.dumps({k: v for f in sorted(pathlib.Path(sys.argv[1]).glob('*/quality.json'))
    for k, v in json.loads(f.read_text()).items()}, indent=2))" "$R/eval" > "$R/eval/quality.json"
kill $SMI
for run in fresh cont; do cp "$R/$run/joint/all_styles.safetensors" "$OUT/${run}_all_styles.safetensors"; done
tar czf "$OUT/results.tgz" -C "$R" --exclude='*.safetensors' --exclude='*.pt' --exclude=lbfgs --exclude=probe \
    env.txt smi.log fresh.out cont.out fresh cont eval
(cd "$R/eval" && tar cf - */lbfgs/*.png) | split -b 15M - "$OUT/lbfgs.tar."
rm -f "$OUT"/lbfgs.tar.a[d-z]   # the call brings back 64 MiB at most
ls -la "$OUT"; cat "$R/env.txt"
tail -n 12 "$R/fresh.out" "$R/cont.out"; tail -n 8 "$R"/eval/*.out; tail -n 4 "$R/smi.log"
