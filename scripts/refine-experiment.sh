#!/bin/bash
# Issue 14, item 5: P-frames predicted by the warp alone against the warp + a filter bank
# conditioned on the coded motion (Lenc & Vedaldi's equivariance map, trained with the codec),
# on clips whose only motion is the camera's (a global affine per frame), 48 px, behind the
# demo's λ=1 intra codec (run `make demo` first, or give its run folder as $1).
#   scripts/refine-experiment.sh [DEMO_RUN]   → runs/refine/eval-refine{0,1}.json
# Each variant is trained at λ = 0.3, 1, 3 with the same data, steps and seed; `eval video`
# reads each variant's RD curve at the all-intra accuracy (P-frame bytes at equal accuracy).
set -euo pipefail
cd "$(dirname "$0")/.."
F="${PYTHON:-.venv/bin/python} -m featcodec"
DEMO="${1:-runs/demo-final}"
R=runs/refine
quiet="--trainer.enable_progress_bar false"
for refine in 0 1; do
  for l in 0.3 1 3; do
    out=$R/refine$refine-lambda$l
    [ -f $out/last.ckpt ] && continue
    $F train --config configs/pframe.yaml --model.base_checkpoint $DEMO/codec-lambda1.ckpt \
      --model.motion affine --model.refine $refine --model.lmbda $l --data.image_size 48 \
      --data.train_size 600 --data.batch_size 16 --data.shape_motion false \
      --trainer.max_epochs 3 --trainer.logger.init_args.save_dir $R \
      --trainer.logger.init_args.name pframe --trainer.logger.init_args.version refine$refine-lambda$l \
      --trainer.callbacks.init_args.dirpath $out $quiet
  done
  $F eval video $R/refine$refine-lambda{0.3,1,3}/last.ckpt --clips 60 --frames 8 \
    --image-size 48 --global-motion --motion affine --skip-no-motion \
    -o $R/eval-refine$refine.json --overwrite
done
