"""A web page for recordings: drop a file or speak, see arousal, dominance and valence turn by turn.

    python app.py                                  # http://127.0.0.1:7860, the shipped demo models
    python app.py --release v1.8-ssl --port 8000   # the authors' models (fetch_models.py)
    python app.py --onnx onnx/ --concurrency 4     # the files of export_onnx.py

The page predicts each speaking turn of an uploaded or recorded file (as prediction_process.py
--turns vad does) and shows the scores as a plot, a table and a CSV; a live mode follows the
microphone. Its API: gradio_client.Client(url).predict(handle_file(path), api_name="/predict")
returns the table first. The model flags are prediction_process.py's; deepemocluster/web_app.py
holds the rest.
"""
from deepemocluster.web_app import main
from utils import run_cli

if __name__ == "__main__":
    run_cli(main)
