#!/bin/bash
# Issue 14, item 5: P-frames predicted by the warp alone against the warp + a filter bank
# conditioned on the coded motion (Lenc & Vedaldi's equivariance map, trained with the codec),
# on clips whose only motion is the camera's (a global affine per frame). Each variant is
# trained with the same data, steps, λ values and seed; `eval video` reads each variant's
# P-frame bytes at the all-intra accuracy (the video experiment's protocol).
#   scripts/refine-experiment.sh 96 [REFINE]  the 96 px setting, behind the intra codec of
#                      `scripts/video-experiment.sh 96`; 960 clips, 12 epochs (720 batches);
#                      the warp alone at λ = WARP_LAMBDAS (default 0.1 10), the bank at
#                      λ = BANK_LAMBDAS (default 0.3 1 10): the README's table;
#                      REFINE = the bank's kernel (1 or 3, default 1)
#                      → runs/refine96/eval-refine{0,REFINE}.json
#   scripts/refine-experiment.sh 48 [DEMO_RUN]  a short run behind the demo's λ=1 intra codec
#                      (48 px, 600 clips, 3 epochs, λ = 0.3, 1, 3) → runs/refine/
set -euo pipefail
cd "$(dirname "$0")/.."
F="${PYTHON:-.venv/bin/python} -m featcodec"
quiet="--trainer.enable_progress_bar false"
if [ "${1:-48}" = 96 ]; then
  R=runs/refine96 BASE=runs/video96/intra/last.ckpt SIZE=96 CLIPS=960 EPOCHS=12
  WARP_LAMBDAS=${WARP_LAMBDAS:-0.1 10} BANK_LAMBDAS=${BANK_LAMBDAS:-0.3 1 10}
  VARIANTS="0 ${2:-1}" TEST="--clips 150 --skip-no-motion"
else
  R=runs/refine BASE="${2:-runs/demo-final}/codec-lambda1.ckpt" SIZE=48 CLIPS=600
  WARP_LAMBDAS="0.3 1 3" BANK_LAMBDAS="0.3 1 3" EPOCHS=3 VARIANTS="0 1"
  TEST="--clips 60 --skip-no-motion"
fi
for refine in $VARIANTS; do
  ckpts=()
  LAMBDAS=$BANK_LAMBDAS
  [ "$refine" = 0 ] && LAMBDAS=$WARP_LAMBDAS
  for l in $LAMBDAS; do
    out=$R/refine$refine-lambda$l
    ckpts+=("$out/last.ckpt")
    [ -f $out/last.ckpt ] && continue
    $F train --config configs/pframe.yaml --model.base_checkpoint $BASE \
      --model.motion affine --model.refine $refine --model.lmbda $l --data.image_size $SIZE \
      --data.train_size $CLIPS --data.batch_size 16 --data.shape_motion false \
      --trainer.max_epochs $EPOCHS --trainer.logger.init_args.save_dir $R \
      --trainer.logger.init_args.name pframe --trainer.logger.init_args.version refine$refine-lambda$l \
      --trainer.callbacks.init_args.dirpath $out $quiet
  done
  $F eval video "${ckpts[@]}" $TEST --frames 8 --image-size $SIZE --global-motion \
    --motion affine -o $R/eval-refine$refine.json --overwrite
done
