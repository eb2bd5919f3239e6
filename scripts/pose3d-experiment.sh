#!/bin/bash
# Issue 16: 3-D keypoints (HEMlets) on the tilted synthetic scenes (48 px, tilt ≤ 60°, fog 0.3).
#   scripts/pose3d-experiment.sh ablation   three task networks, the same architecture trained
#                                           with L_3D only / + L_2D / + L_HEM (the paper's
#                                           loss), EPOCHS epochs each (default 12), for each
#                                           seed of SEEDS (default 0 1); `featcodec
#                                           experiment pose3d` on 500 test scenes: MPJPE,
#                                           PCK-3D, relative depth order → runs/pose3d/
#   scripts/pose3d-experiment.sh codecs     (after ablation) base codecs in front of the full
#                                           network at λ = LAMBDAS (default 30 3 0.3), with
#                                           the task loss and with distillation; `eval rd` of
#                                           each with the classical anchors on the same tensors,
#                                           `eval bd` against JPEG at equal MPJPE
#   scripts/pose3d-experiment.sh scalable   (after codecs) a 2-D keypoints network (KP_EPOCHS,
#                                           default 6) and its base codec (λ = 3); enhancement layers for the 3-D maps,
#                                           conditioned on that base and standalone, at λ_e =
#                                           ENH_LAMBDAS (default 1 10); `featcodec experiment
#                                           pose3d --enhancement` beside the 3-D base codecs
# A finished training run is not run again (delete runs/pose3d/NAME.ckpt to redo it).
set -euo pipefail
cd "$(dirname "$0")/.."
F="${PYTHON:-.venv/bin/python} -m featcodec"
quiet="--trainer.enable_progress_bar false"
R=runs/pose3d
EPOCHS=${EPOCHS:-12}
SCENES="--data.init_args.tilt 60 --data.init_args.fog 0.3"
EVAL="--size 500 --tilt 60 --fog 0.3"

source scripts/train-once.sh

case "${1:-ablation}" in
ablation)
  nets=()
  labels=()
  for seed in ${SEEDS:-0 1}; do
    sfx=$([ "$seed" = 0 ] && echo "" || echo "-seed$seed")
    common=(--config configs/tasknet-pose3d.yaml --trainer.max_epochs $EPOCHS --seed_everything $seed)
    train_once tasknet$sfx "${common[@]}"
    train_once tasknet-2d$sfx "${common[@]}" --model.task_options '{triplet_loss: false}'
    train_once tasknet-3d$sfx "${common[@]}" \
      --model.task_options '{heatmap_loss: false, triplet_loss: false}'
    nets+=($R/tasknet-3d$sfx.ckpt $R/tasknet-2d$sfx.ckpt $R/tasknet$sfx.ckpt)
    labels+=("soft-argmax (L_3D), seed $seed" "+ 2-D heatmaps (L_2D), seed $seed"
      "+ triplets (L_HEM), seed $seed")
  done
  $F experiment pose3d "${nets[@]}" --labels "${labels[@]}" $EVAL -o $R/ablation.json
  ;;
codecs)
  LAMBDAS=${LAMBDAS:-30 3 0.3}
  for d in task distill; do
    ckpts=()
    for l in $LAMBDAS; do
      train_once codec-$d-lambda$l --config configs/quickstart.yaml $SCENES \
        --model.task pose3d --model.task_checkpoint $R/tasknet.ckpt --model.distortion $d \
        --model.lmbda $l --model.cache_frozen true
      ckpts+=($R/codec-$d-lambda$l.ckpt)
    done
    anchors=()
    [ $d = task ] && anchors=(--anchors ${ANCHORS:-jpeg zstd x265-12bit})
    $F eval rd "${ckpts[@]}" --name "base ($d)" "${anchors[@]}" $EVAL -o $R/rd-$d.json --overwrite
  done
  $F eval bd $R/rd-task.json $R/rd-distill.json --anchor jpeg
  ;;
scalable)
  ENH_LAMBDAS=${ENH_LAMBDAS:-1 10}
  train_once tasknet-keypoints --config configs/tasknet.yaml $SCENES --model.task keypoints \
    --trainer.max_epochs ${KP_EPOCHS:-6}
  train_once base-keypoints --config configs/quickstart.yaml $SCENES --model.task keypoints \
    --model.task_checkpoint $R/tasknet-keypoints.ckpt --model.lmbda ${BASE_LAMBDA:-3} \
    --model.cache_frozen true
  enh=()
  labels=()
  for kind in conditional standalone; do
    for l in $ENH_LAMBDAS; do
      train_once enh-$kind-lambda$l --config configs/enhancement.yaml $SCENES \
        --model.base_checkpoint $R/base-keypoints.ckpt --model.target pose3d --model.lmbda $l \
        --model.standalone $([ $kind = standalone ] && echo true || echo false)
      enh+=($R/enh-$kind-lambda$l.ckpt)
      labels+=("$kind λ_e=$l")
    done
  done
  $F experiment pose3d --enhancement "${enh[@]}" --labels "${labels[@]}" $EVAL \
    --against $R/rd-task.json -o $R/scalable.json
  ;;
*)
  echo "usage: $0 ablation | codecs | scalable" >&2
  exit 2
  ;;
esac
