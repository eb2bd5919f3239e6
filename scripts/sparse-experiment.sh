#!/bin/bash
# Issue 15, item 5: spatially sparse edge fronts (DynConv) on the synthetic scenes (48 px), CPU.
#   scripts/sparse-experiment.sh fronts   the dense task network (configs/tasknet.yaml), then
#                                         sparse fronts (layer1 + layer2) fine-tuned from it at
#                                         θ = 0.25, 0.5, 0.75, 1 (EPOCHS epochs, default 4);
#                                         `featcodec experiment sparse` on 500 test scenes:
#                                         accuracy, front FLOPs, masks over objects/background,
#                                         and the mask figure → runs/sparse/
#   scripts/sparse-experiment.sh coding   (after fronts) base codecs on the θ = FRONT (default
#                                         0.5) front at λ = LAMBDAS (default 0.3 1 3), latent at
#                                         stride 8 (downsample 0): plain, the front's mask sent
#                                         (gate mask) and a gate derived from the hyper-latent
#                                         (gate derived); `eval rd` of each curve on 500 test
#                                         scenes (real bytes) and `eval bd` against the plain one
# A finished training run is not run again (delete runs/sparse/NAME.ckpt to redo it).
set -euo pipefail
cd "$(dirname "$0")/.."
F="${PYTHON:-.venv/bin/python} -m featcodec"
quiet="--trainer.enable_progress_bar false"
R=runs/sparse
EPOCHS=${EPOCHS:-4}
BUDGETS=${BUDGETS:-0.25 0.5 0.75 1}

source scripts/train-once.sh

case "${1:-fronts}" in
fronts)
  train_once tasknet --config configs/tasknet.yaml
  ckpts=($R/tasknet.ckpt)
  labels=(dense)
  for b in $BUDGETS; do
    train_once tasknet-theta$b --config configs/tasknet-sparse.yaml \
      --model.init_weights $R/tasknet.ckpt --model.sparsity.budget $b \
      --trainer.max_epochs $EPOCHS
    ckpts+=($R/tasknet-theta$b.ckpt)
    labels+=("θ=$b")
  done
  $F experiment sparse "${ckpts[@]}" --labels "${labels[@]}" --scenes 500 \
    --figure $R/masks.png -o $R/fronts.json
  ;;
coding)
  FRONT=${FRONT:-0.5}
  LAMBDAS=${LAMBDAS:-0.3 1 3}
  results=()
  for gate in plain mask derived; do
    ckpts=()
    extra=()
    [ $gate != plain ] && extra=(--model.gate $gate)
    for l in $LAMBDAS; do
      train_once codec-$gate-lambda$l --config configs/quickstart.yaml \
        --model.task_checkpoint $R/tasknet-theta$FRONT.ckpt --model.sparse layer2 \
        --model.downsample 0 --model.lmbda $l --model.cache_frozen true "${extra[@]}"
      ckpts+=($R/codec-$gate-lambda$l.ckpt)
    done
    $F eval rd "${ckpts[@]}" --name $gate --size 500 -o $R/rd-$gate.json --overwrite
    results+=($R/rd-$gate.json)
  done
  $F eval bd "${results[@]}" --anchor plain
  ;;
*)
  echo "usage: $0 fronts | coding" >&2
  exit 2
  ;;
esac
