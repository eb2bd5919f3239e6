#!/bin/bash
# Issue 14, items 3 and 4: stitching between networks (Lenc & Vedaldi's "Franken-network") and
# old streams served to a new back end, on the synthetic scenes (48 px), on CPU. Needs the
# demo's run (runs/demo-final: `featcodec demo --out runs/demo-final`).
#   scripts/stitch-experiment.sh serve   network B (the demo's task network config, seed 1), a
#                                        codec for B at the demo's λ=1, a stitch A→B at layer2
#                                        trained on A's decoded tensors (A: the demo's λ=1
#                                        codec); then the synthetic test split (300 scenes)
#                                        coded by A's codec, decoded by B through E, against B
#                                        with its own codec (accuracy, real stream bytes); also
#                                        E learned from A's clean tensors, for comparison
#   scripts/stitch-experiment.sh seeds   (after serve) `experiment stitching` A → B (two seeds
#                                        of scene_resnet10) at every split point
#   scripts/stitch-experiment.sh archs   ResNet-18 trained on the scenes (seed 1), and
#                                        `experiment stitching` scene_resnet10 → ResNet-18
# A finished training run is not run again (delete runs/stitch-exp/NAME.ckpt to redo it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
F="$PY -m featcodec"
quiet="--trainer.enable_progress_bar false"
R=runs/stitch-exp
A_NET=runs/demo-final/tasknet.ckpt
A_CODEC=runs/demo-final/codec-lambda1.ckpt
B_NET=$R/tasknet-b.ckpt
LONG="--steps 300 --train-size 4800"  # E trained 300 steps (2 epochs of 4800 scenes) per split

source scripts/train-once.sh

case "${1:-serve}" in
serve)
  # B: the demo's task network configuration (configs/tasknet.yaml), another seed
  train_once tasknet-b --config configs/tasknet.yaml --seed_everything 1
  # B's codec: the demo's codec configuration (N = M = 64, no attention, distillation, lr 3e-3)
  # at the demo's λ = 1, 4 epochs from scratch (the demo: 3 epochs at λ = 4, then 1 at λ = 1)
  train_once codec-b --config configs/quickstart.yaml --model.task_checkpoint $B_NET \
    --model.lmbda 1 --model.cache_frozen true
  # E from A's decoded tensors (A's λ=1 codec) into B's back end at layer2
  train_once stitch-a2b --config configs/stitch.yaml --model.codec_a $A_CODEC \
    --model.network_b $B_NET
  # the same E learned from A's clean tensors instead (decoded=false), for comparison
  train_once stitch-a2b-clean --config configs/stitch.yaml --model.codec_a $A_CODEC \
    --model.network_b $B_NET --model.decoded false
  # the test split through real streams: A's codec and B's codec (eval rd keeps the streams)
  $F eval rd $A_CODEC --name a --streams $R/streams -o $R/rd-a.json --size 300 --overwrite
  $F eval rd $R/codec-b.ckpt --name b --streams $R/streams -o $R/rd-b.json --size 300 \
    --overwrite
  $F decode $R/streams/a/codec-lambda1 -c $A_CODEC -o $R/decoded-a --overwrite
  $F decode $R/streams/a/codec-lambda1 -c $A_CODEC --stitch $R/stitch-a2b.ckpt \
    -o $R/decoded-a-through-e-to-b --overwrite
  $F decode $R/streams/a/codec-lambda1 -c $A_CODEC --stitch $R/stitch-a2b-clean.ckpt \
    -o $R/decoded-a-through-clean-e-to-b --overwrite
  $F decode $R/streams/b/codec-b -c $R/codec-b.ckpt -o $R/decoded-b --overwrite
  # each against the labels, with its streams' real bytes; both networks uncompressed
  $PY - <<EOF
import json
from featcodec.eval.stitching import compare_streams, own_metric
from featcodec.eval.data import synthetic_eval_set

R = "$R"
runs = {
    "A's streams, A's back end": (f"{R}/streams/a/codec-lambda1", f"{R}/decoded-a/predictions.json"),
    "A's streams through E, B's back end": (
        f"{R}/streams/a/codec-lambda1", f"{R}/decoded-a-through-e-to-b/predictions.json"),
    "A's streams through E learned on clean tensors, B's back end": (
        f"{R}/streams/a/codec-lambda1", f"{R}/decoded-a-through-clean-e-to-b/predictions.json"),
    "B's own codec, B's back end": (f"{R}/streams/b/codec-b", f"{R}/decoded-b/predictions.json"),
}
result = compare_streams(runs, 300)
test = synthetic_eval_set("test", 300, 48, 0)
result["uncompressed"] = {"A": own_metric("$A_NET", test), "B": own_metric("$B_NET", test)}
open(f"{R}/serve.json", "w").write(json.dumps(result, indent=2))
for name, r in result["runs"].items():
    print(f"{name:<62} accuracy {r['accuracy']:.3f}  {r['bytes_per_image']:7.1f} B/image  "
          f"{r['bpp']:.4f} bpp")
u = result["uncompressed"]
print(f"uncompressed: A {u['A']:.3f}, B {u['B']:.3f}")
EOF
  ;;
seeds)
  $F experiment stitching --network-a $A_NET --network-b $B_NET --out $R/seeds $LONG
  ;;
archs)
  train_once resnet18-b --config configs/tasknet.yaml --seed_everything 1 \
    --model.backbone resnet18
  $F experiment stitching --network-a $A_NET --network-b $R/resnet18-b.ckpt \
    --out $R/archs $LONG
  ;;
*)
  echo "usage: $0 serve|seeds|archs" >&2
  exit 2
  ;;
esac
