#!/usr/bin/env bash
# One zoo release, start to finish on one GPU: pretrain a recipe, export its last checkpoint as a release (fp16
# Hub folder, sha256 in ladder_zoo/releases.json), evaluate it (kNN and linear probe per stage, train.eval) and
# put the evaluation into the release's card.
#
#   bash examples/gpu/release_run.sh train/configs/byol_r18_cifar_cifar10_200ep.yaml [key=value ...]
#
# key=value go to train.pretrain (e.g. compile=default); EVAL_ARGS adds train.eval options. The release is
# written before the evaluation starts, so an evaluation that fails or runs out of GPU time loses nothing:
# evaluate the folder later (any machine) and add it with `python -m train.export FOLDER --eval JSON --register`.
# The run folder is the recipe's out_dir (runs/<recipe>); the evaluation goes to runs/<recipe>/eval. Two of these
# may run at once on one GPU: registering takes a lock on releases.json. The last line says "done", or "FAILED"
# and the stage. REGISTER=0 exports into runs/<recipe>/export/ without registering: for a shortened run, such as
# the script's CPU check (epochs=2 optim.warmup_epochs=1 batch_size=8 data.path=tests/data/cifar10_sample
# device=cpu amp=none, with EVAL_ARGS="--device cpu --views 8 --linear-epochs 2"), which is no release.
set -euo pipefail
recipe=$1; shift
name=$(basename "$recipe" .yaml)
model=$(python -c "import sys; from train.config import read_recipe; print(read_recipe(sys.argv[1])['model'])" "$recipe")
tag=${name#"${model}_"}
run=runs/$name
release=hub/ladder-zoo/$model.$tag
data=data/cifar10-jpeg.tar.gz
for kv in "$@"; do case $kv in data.path=*) data=${kv#data.path=};; esac; done
lock=(); command -v flock >/dev/null && lock=(flock "${TMPDIR:-/tmp}/ladder_zoo_releases.lock")
stage() { stage=$1; echo "[$(date -u +%T)] $name: $stage"; }
trap 'rc=$?; echo "[$(date -u +%T)] $name: FAILED (exit $rc) in $stage"' ERR

register=(--register)
if [ "${REGISTER:-1}" = 0 ]; then register=(); release=$run/export/$model.$tag; fi

stage pretrain
python -m train.pretrain --config "$recipe" progress=false "$@"
stage export
"${lock[@]}" python -m train.export "$run/last.pt" --out "$release" --dtype fp16 "${register[@]}"
stage eval
rm -rf "$run/eval"
python -m train.eval "$run/last.pt" --data "$data" --out "$run/eval" --workers 8 ${EVAL_ARGS:-}
stage "add the evaluation to the release"
"${lock[@]}" python -m train.export "$release" --eval "$(ls "$run"/eval/"$model"@*.json)" "${register[@]}"
stage done
