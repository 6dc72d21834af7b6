"""A fixture release (6 models of 2 temporal types, 3 NormTerm files) and the raw-file server
on 127.0.0.1 that fetch_models.py downloads it from: tests never reach the internet."""
import hashlib
import http.server

import fetch_models

COMMIT = "0123456789abcdef0123456789abcdef01234567"
FIXTURE_TYPES = ("Temp-GRU", "Temp-Trans")
NORM_NAMES = ("NormTerm/feat_norm_means.mat", "NormTerm/feat_norm_stds.mat", "NormTerm/act_norm_means.mat")


def git_blob_id(content):
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def fixture_content(seed, size):
    """Distinct bytes per file, spanning several download blocks for the models."""
    out, block = bytearray(), hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in server.cut:
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def url_path(path):
    return f"/{fetch_models.REPOSITORY}/{COMMIT}/{path}"
