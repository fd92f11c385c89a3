#!/usr/bin/env bash
# usage: identity.sh TREE OUTDIR  -- the tiny fixture through the chain, artifacts in OUTDIR
set -euo pipefail
T=$1; O=$2; rm -rf $O; mkdir -p $O
cd $T
PY="env PYTHONPATH=$T /work/main/.venv/bin/python"
$PY -c "from fyexport.datasets import shapes; shapes.generate('$O/shapes', train=24, val=8)" 2>/dev/null || \
$PY -c "from fyexport.data import shapes; shapes.generate('$O/shapes', train=24, val=8)"
W=fyexport/assets/yolov7-tiny-shapes.pt
$PY -m fyexport export $W -o $O/model.onnx --img-size 320 -q
$PY -m fyexport export $W -o $O/nms.onnx --img-size 320 --nms -q
$PY -m fyexport calibrate $O/model.onnx --images $O/shapes/images/train -o $O/int8 --method search --auto-exclude 2 --num-images 16 -q
$PY -m fyexport prune $W --ratio 0.3 -o $O/pruned.pt -q > /dev/null
$PY -m fyexport recover $O/pruned.pt --teacher $W --data $O/shapes/shapes.yaml --max-steps 3 --batch 4 --img-size 320 --crop 160 --reconstruct 8 --check-every 100 --device cpu -o $O/recovered.pt -q
$PY -m fyexport export $O/recovered.pt -o $O/recovered.onnx --img-size 320 -q
$PY -m fyexport build --weights $W --calib $O/shapes/images/train -o $O/build --prune 0 --img-size 320 --num-images 16 --no-bench --data $O/shapes/shapes.yaml -q > /dev/null || true
cd $O; find . -type f \( -name "*.onnx" -o -name "*.cache" -o -name "calib.json" -o -name "*.pt" \) | sort | xargs sha256sum > $O/SHA256SUMS
