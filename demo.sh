#!/usr/bin/env bash
# Set up (virtual environment, dependencies) and run the whole pipeline on the
# built-in demo corpus: make the corpus, extract features, compute NormTerm (into ./NormTerm_demo),
# train one model, test it, and predict a folder of WAVs. The steps are those of
# the README's "The demo, step by step". The demo's model goes to ./demo_models;
# the shipped models in ./trained_models are only read.
set -euo pipefail
cd "$(dirname "$0")"
source setup_env.sh
PY=.venv/bin/python
FLAGS="-ep 4 -batch 32 -emo Act -nc 10 -mt Temp-Triplet --norm-dir NormTerm_demo --model-dir demo_models"
start=$(date +%s)

echo "== 1/6 demo corpus";        $PY make_demo_corpus.py
echo "== 2/6 features";           $PY feat_extract.py --workers 2
echo "== 3/6 normalisation";      $PY norm_para.py --norm-dir NormTerm_demo
echo "== 4/6 training ($FLAGS)";  $PY main.py $FLAGS --overwrite
echo "== 5/6 Test1";              $PY online_testing.py $FLAGS
echo "== 6/6 prediction (the shipped demo models)"; $PY prediction_process.py

cat <<MSG

Done in $(( $(date +%s) - start )) s. Outputs:
  corpus:       ./demo_corpus/Audios, ./demo_corpus/Labels/labels_concensus.csv
  features:     ./demo_corpus/Features/*.mat
  NormTerm:     ./NormTerm_demo/*.mat (the committed ./NormTerm's values, to float rounding)
  model:        ./demo_models/TempDeepEmoCluster_epoch4_batch32_10clusters_Act_Temp-Triplet.pth.tar
  training log: ./demo_models/TempDeepEmoCluster_epoch4_batch32_10clusters_Act_Temp-Triplet_{history.json,clusters.npy,NMI_ValLoss.png,TrainLoss.png}
  predictions:  ./pred_result.csv (files in ./demo_corpus/Predict)
  chunk cache:  ./cache ($(du -sh cache | cut -f1); the chunks training and testing read, reused by later runs; delete it to free the space)
MSG
