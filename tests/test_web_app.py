"""app.py, the web page for recordings, served as a user starts it (a child process on a free
loopback port) and used through its API (gradio_client) and in Debian's Chromium: its table
equal to prediction_process.py's CSV, broken and too-large uploads refused with a message
while the server goes on, requests beyond --concurrency queued, no upload kept, and the live
microphone mode showing turns."""
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from demo import long_recording
from deepemocluster.web_requests import TEMP_DIR_PREFIX
from support import ROOT
from support.browser import chromium, close_messages, elements, table_rows, wait_for
from support.cli import run_script

CONCURRENCY = 2
START_POLLS = 360                # half-second looks for the server's start line: 3 minutes
MAX_FILE_MB = 1
RECORDING_MINUTES = 0.3          # 18 s of speech-like audio, under MAX_FILE_MB as a 16-bit WAV
COMMAND_TURNS = ["--turns", "vad"]
SCORES = ["Aro-Score", "Dom-Score", "Val-Score"]
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
SCREENSHOT = "DEEPEMOCLUSTER_SCREENSHOT"   # also save the browser test's screenshot here (docs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """app.py in a child process: its URL, log, and the temporary folders it may write to."""

    def __init__(self, folder, *flags):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / "server.log"
        self.gradio_dir, self.tmp_dir = folder / "gradio", folder / "tmp"
        self.tmp_dir.mkdir()
        env = dict(os.environ, GRADIO_TEMP_DIR=str(self.gradio_dir), TMPDIR=str(self.tmp_dir))
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen([sys.executable, "app.py", "--port", str(self.port), *flags],
                                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(START_POLLS):          # a bound on a stuck start, not a speed check
            if "serving on" in self.log():
                break
            assert self.process.poll() is None, f"app.py exited:\n{self.log()}"
            time.sleep(0.5)
        else:
            pytest.fail(f"app.py did not start:\n{self.log()}")

    def log(self):
        return self.log_path.read_text()

    def stop(self):
        self.process.terminate()
        return self.process.wait(timeout=60)

    def files(self):
        """Every file under the server's temporary folders."""
        return [os.path.join(root, name) for folder in (self.gradio_dir, self.tmp_dir)
                for root, _, names in os.walk(folder) for name in names]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("app"), "--concurrency", str(CONCURRENCY),
                 "--max-file-mb", str(MAX_FILE_MB))
    yield srv
    assert srv.stop() == 0
    assert not list(srv.tmp_dir.glob(TEMP_DIR_PREFIX + "*"))      # its own folder removed
    assert "Traceback" not in srv.log()


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A folder holding one speech-like recording with known turns (demo/long_recording.py): its path."""
    wav, _, _ = long_recording.write(str(tmp_path_factory.mktemp("recording")), RECORDING_MINUTES)
    return Path(wav)


@pytest.fixture(scope="module")
def command_table(recording, tmp_path_factory):
    """What prediction_process.py writes for the recording."""
    out = tmp_path_factory.mktemp("command") / "pred.csv"
    code, _, err = run_script("prediction_process.py", "--input", recording.parent, "--output", out,
                              *COMMAND_TURNS)
    assert code == 0, err
    return pd.read_csv(out)


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


def api_table(client, path):
    """/predict's first output, the turn table, as a DataFrame (and the CSV it offers)."""
    from gradio_client import handle_file

    table, _, csv = client.predict(handle_file(str(path)), api_name="/predict")
    return pd.DataFrame(table["data"], columns=table["headers"]), csv


def assert_same_turns(table, expected):
    assert list(table.columns) == ["File_Name", "Start", "End"] + SCORES
    turns = ["File_Name", "Start", "End"]
    assert table[turns].values.tolist() == expected[turns].values.tolist()
    np.testing.assert_allclose(table[SCORES].to_numpy(float), expected[SCORES].to_numpy(float),
                               rtol=0, atol=1e-5)


def broken_files(folder, recording):
    """Uploads that are not audio: text, an empty file, a WAV cut short."""
    folder.mkdir(exist_ok=True)
    files = {"notes.wav": b"these are notes, not audio\n" * 20, "empty.wav": b"",
             "cut.wav": recording.read_bytes()[:4000]}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def too_large_file(folder, recording):
    """A valid WAV over MAX_FILE_MB (the recording's samples repeated)."""
    import soundfile as sf

    y, rate = sf.read(str(recording), dtype="int16")
    path = folder / "long_talk.wav"
    sf.write(str(path), np.tile(y, 3), rate, subtype="PCM_16")
    assert path.stat().st_size > MAX_FILE_MB * 2 ** 20
    return path


def test_api_table_equals_the_commands_csv(client, recording, command_table, tmp_path):
    table, csv = api_table(client, recording)
    assert len(table) >= 2
    assert_same_turns(table, command_table)
    assert os.path.basename(csv) == "long_recording_turns.csv"
    assert_same_turns(pd.read_csv(csv), command_table)


def test_broken_and_too_large_uploads_get_an_error_and_the_server_goes_on(server, client, recording,
                                                                         command_table, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    reasons = {"notes.wav": "Format not recognised", "empty.wav": "Format not recognised",
               "cut.wav": "cut short: its header promises"}
    for name, path in broken_files(tmp_path / "broken", recording).items():
        with pytest.raises(AppError, match=re.escape(name) + ".*" + reasons[name]):
            client.predict(handle_file(str(path)), api_name="/predict")
        refused = [line for line in server.log().splitlines() if f"refused {name}:" in line]
        assert len(refused) == 1 and str(server.gradio_dir) not in refused[0]
    big = too_large_file(tmp_path, recording)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(handle_file(str(big)), api_name="/predict")
    limit = MAX_FILE_MB * 2 ** 20
    assert upload_status(server.url, big) == (413, f"File size exceeded maximum allowed size of {limit} bytes.")
    assert server.log().count(f"refused an upload from 127.0.0.1: over --max-file-mb {MAX_FILE_MB} MiB") == 1
    assert_same_turns(api_table(client, recording)[0], command_table)


def upload_status(url, path):
    """(HTTP status, body) of the file at `path` sent to the server's upload route as a browser
    sends it, past gradio_client's own size check."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n")
    body = head.encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_requests_beyond_the_concurrency_queue_and_all_are_answered(server, client, recording, command_table):
    from gradio_client import handle_file

    before = server.log().count("predicted long_recording.wav")
    jobs = [client.submit(handle_file(str(recording)), api_name="/predict") for _ in range(8)]
    for job in jobs:
        table = job.result(timeout=600)[0]
        assert_same_turns(pd.DataFrame(table["data"], columns=table["headers"]), command_table)
    lines = [line for line in server.log().splitlines() if "predicted long_recording.wav" in line]
    assert len(lines) == before + 8
    running = [int(re.search(r"\((\d+) request\(s\) running\)", line)[1]) for line in lines]
    assert max(running) <= CONCURRENCY


def test_models_load_once_and_no_upload_is_kept(server, client, recording):
    api_table(client, recording)
    assert server.log().count("models loaded:") == 1
    assert not [f for f in server.files() if f.lower().endswith(AUDIO_SUFFIXES)]


def test_the_page_predicts_an_upload_and_shows_errors(server, recording, command_table, tmp_path):
    driver = chromium()
    try:
        open_page(driver, server.url)
        assert elements(driver, "#predict")[0].text == "Predict"
        for text in ("1–7 for MSP-Podcast", "the shipped demo models", "app.py --release v1.8-ssl"):
            assert text in driver.page_source
        refused = ((broken_files(tmp_path / "broken", recording)["notes.wav"], "Format not recognised", True),
                   (too_large_file(tmp_path, recording), f"exceed the maximum allowed size of {MAX_FILE_MB}", False))
        for path, message, accepted in refused:
            upload(driver, path, accepted)
            elements(driver, "#predict")[0].click()
            shown = wait_for(driver, lambda d: [m.text for m in elements(d, "[data-testid='toast-body']")
                                                if message in m.text])
            assert path.name in shown[0]
            close_messages(driver)
        upload(driver, recording)
        elements(driver, "#predict")[0].click()
        rows = wait_for(driver, lambda d: table_rows(d, "#turns"))
        assert rows == [[name] + [f"{value:.3f}" for value in values]
                        for name, *values in command_table.values.tolist()]
        wait_for(driver, lambda d: elements(d, "#plot img"))
        close_messages(driver)
        for png in [tmp_path / "page.png"] + ([os.environ[SCREENSHOT]] if os.environ.get(SCREENSHOT) else []):
            assert driver.save_screenshot(str(png))
    finally:
        driver.quit()


def open_page(driver, url):
    driver.get(url)
    wait_for(driver, lambda d: elements(d, "#predict"))


def upload(driver, path, accepted=True):
    """Put a file into the page's recording box (clearing what it held); wait until the server
    holds it, if it is `accepted`."""
    for clear in elements(driver, "#recording button[aria-label='Clear']"):
        clear.click()
    wait_for(driver, lambda d: elements(d, "#recording input[type=file]"))[0].send_keys(str(path))
    if accepted:
        wait_for(driver, lambda d: elements(d, "#recording audio"))


def test_live_mode_shows_the_turns_of_the_microphone(server, recording):
    driver = chromium(fake_microphone=recording)
    try:
        open_page(driver, server.url)
        next(tab for tab in elements(driver, "button[role=tab]") if tab.text == "Live").click()
        start = elements(driver, "#live-start")[0]
        wait_for(driver, lambda d: start.is_displayed())
        start.click()
        first = wait_for(driver, lambda d: len(table_rows(d, "#live-turns")) >= 2 and table_rows(d, "#live-turns"))
        later = wait_for(driver, lambda d: grown(first, table_rows(d, "#live-turns")))
        for rows in (first, later):
            assert all(row[0] == "microphone" for row in rows)
            starts, ends = [float(row[1]) for row in rows], [float(row[2]) for row in rows]
            assert starts[0] >= 0 and all(s < e for s, e in zip(starts, ends))
            assert all(e <= s for e, s in zip(ends, starts[1:]))
        wait_for(driver, lambda d: elements(d, "#live-plot img"))
        elements(driver, "#live-stop")[0].click()
        wait_for(driver, lambda d: elements(d, "#live-status")[0].text.startswith("stopped after"))
    finally:
        driver.quit()
    assert not [f for f in server.files() if f.lower().endswith(AUDIO_SUFFIXES)]


def grown(before, rows):
    """`rows` if the turns reach further than `before` did (more turns, or the last one longer)."""
    return rows if rows and (len(rows) > len(before) or float(rows[-1][2]) > float(before[-1][2])) else None


def test_flags_and_faults_at_start_give_one_line(tmp_path):
    code, out, err = run_script("app.py", "--help")
    assert code == 0
    for flag in ("--host", "--port", "--max-file-mb", "--concurrency", "--release", "-mt", "--onnx"):
        assert flag in out
    code, _, err = run_script("app.py", "--port", "70000")
    assert code == 2 and err.strip().endswith("--port must be between 0 and 65535, got 70000")
    code, _, err = run_script("app.py", "--model-dir", tmp_path / "none")
    assert code == 1 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = run_script("app.py", "--port", taken.getsockname()[1])
    assert code == 1 and "pick another --port" in err and "Traceback" not in err
