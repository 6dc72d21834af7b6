"""What the tests share, by concern (pytest's fixtures are in tests/conftest.py), and what they
run: distributed_driver.py (under torchrun), full_disk.py with full_disk_site/ (a full disk,
in this process or a child), slurm_cluster.sh (a one-machine SLURM cluster).

- audio: synthetic speech and tones, written as audio files
- corpus: a labelled corpus in the MSP-Podcast layout, and its labels files
- cli: the scripts run as a user runs them
- files: reading back what the scripts wrote
- training: the small training setup (its flags, files, untrained checkpoints)
- models: checkpoints and NormTerms for prediction, in the project's names and release layouts
- release_server: a fixture release and the raw-file server fetch_models.py downloads it from
- onnx_export: the shipped models exported to ONNX, and the tolerances they are held to
- browser: Debian's Chromium in headless mode through Selenium, with a fake microphone
"""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
