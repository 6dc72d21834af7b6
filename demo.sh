#!/usr/bin/env bash
# Set up (virtual environment, dependencies) and run the whole pipeline on the
# built-in demo corpus: make the corpus, extract features, compute NormTerm,
# train one model, test it, and predict a folder of WAVs.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
PY=.venv/bin/python
FLAGS="-ep 10 -batch 64 -emo Val -nc 10 -mt Temp-Triplet"
start=$(date +%s)

echo "== 1/6 demo corpus";        $PY make_demo_corpus.py
echo "== 2/6 features";           $PY feat_extract.py --workers 2
echo "== 3/6 normalisation";      $PY norm_para.py
echo "== 4/6 training ($FLAGS)";  $PY main.py $FLAGS
echo "== 5/6 Test1";              $PY online_testing.py $FLAGS
echo "== 6/6 prediction (the shipped demo models)"; $PY prediction_process.py

cat <<MSG

Done in $(( $(date +%s) - start )) s. Outputs:
  corpus:       ./demo_corpus/Audios, ./demo_corpus/Labels/labels_concensus.csv
  features:     ./demo_corpus/Features/*.mat
  NormTerm:     ./NormTerm/*.mat
  model:        ./trained_models/TempDeepEmoCluster_epoch10_batch64_10clusters_Val_Temp-Triplet.pth.tar
  training log: ./trained_models/TempDeepEmoCluster_epoch10_batch64_10clusters_Val_Temp-Triplet_{history.json,clusters.npy,NMI_ValLoss.png,TrainLoss.png}
  predictions:  ./pred_result.csv (files in ./demo_corpus/Predict)
MSG
