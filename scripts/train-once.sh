# Sourced by the experiment scripts: train_once NAME ARGS... runs `featcodec train ARGS` into
# $R/NAME/ (TensorBoard logs and last.ckpt) and keeps the finished run as $R/NAME.ckpt; a run
# whose $R/NAME.ckpt exists is not trained again (delete it to redo). Needs $F, $R and $quiet.
train_once() {
  local name=$1
  shift
  [ -f $R/"$name".ckpt ] && return  # only a finished run is copied there
  $F train "$@" --trainer.logger.init_args.save_dir $R --trainer.logger.init_args.name "$name" \
    --trainer.callbacks.init_args.dirpath $R/"$name" $quiet
  cp $R/"$name"/last.ckpt $R/"$name".ckpt
}
