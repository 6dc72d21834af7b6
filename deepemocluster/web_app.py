"""app.py: a web page (Gradio) where a recording, uploaded or spoken, gets arousal, dominance and
valence per speaking turn, as a plot over time, a table and a CSV; and its API, /predict.

The server binds the loopback address unless told otherwise, never opens a public share
link, sends no analytics, loads the models once at start, queues requests beyond
--concurrency, and deletes every upload once its request is done.
"""
import argparse
import html
import ipaddress
import logging
import os
import shutil
import signal
import socket
import time

from deepemocluster import prediction, web_live, web_requests
from deepemocluster.compute import configure_backends
from deepemocluster.demo_models import SUGGESTED_RELEASE
from deepemocluster.model_flags import add_model_selection
from deepemocluster.predictor import FLAGS, Predictor
from utils import PYTHON, UserError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_FILE_MB = 300
BYTES_PER_MB = 2 ** 20
CACHE_SWEEP = (600, 3600)        # every 10 min, Gradio's copies older than an hour go
WAIT_SECONDS = 0.5               # how often the main thread looks whether the server still runs
PAGE_TITLE = "DeepEmoCluster: emotion turn by turn"
SYSTEM_FONTS = (["ui-sans-serif", "system-ui", "sans-serif"], ["ui-monospace", "monospace"])
AUDIO_TYPES = "WAV, FLAC, OGG or MP3"
SCALE_NOTE = ("Scores are on the rating scale of the labels the models learnt from: 1–7 for "
              "MSP-Podcast (1 very calm, weak or negative; 7 very excited, strong or positive).")
DEMO_NOTE = (f"\n\n**The demo models learnt from synthetic speech only: on real recordings their scores "
             f"mean nothing.** For real recordings, fetch the authors' models (`{PYTHON} fetch_models.py "
             f"{SUGGESTED_RELEASE}`) and start `{PYTHON} app.py --release {SUGGESTED_RELEASE}`.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to serve on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--max-file-mb", type=float, default=DEFAULT_MAX_FILE_MB,
                   help=f"largest upload accepted, in MiB (default {DEFAULT_MAX_FILE_MB})")
    p.add_argument("--concurrency", type=int, default=os.cpu_count() or 1,
                   help="recordings predicted at once, and live sessions followed at once; more wait "
                        f"in a queue (default: the CPU's cores, {os.cpu_count()})")
    add_model_selection(p)
    p.add_argument("--workers", type=int, default=1, help="feature-extraction processes per request "
                                                          "(prediction_process.py's --workers)")
    p.add_argument("--onnx", metavar="DIR", help="predict with the three models export_onnx.py wrote into "
                                                 "DIR, through ONNX Runtime (prediction_process.py's --onnx)")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be between 0 and 65535, got {args.port}")
    if not args.max_file_mb > 0:
        p.error(f"--max-file-mb must be greater than 0, got {args.max_file_mb:g}")
    if args.concurrency < 1:
        p.error(f"--concurrency must be at least 1, got {args.concurrency}")
    return args


def load_predictor(args):
    """The Predictor of the model flags (prediction_process.py's, checked as it checks them)."""
    return Predictor(**{key: getattr(args, key) for key in FLAGS})


def script_backends(predictor):
    """torch's backend flags set for the whole server as prediction_process.py sets them: the
    Predictor sets and restores them around each prediction, and with several requests at once
    one restoring them must not change them under another."""
    if isinstance(predictor.runner, prediction.TorchModels):
        configure_backends(predictor.runner.settings.device)


def build_page(recordings, live):
    """The page: a recording uploaded or recorded and the Predict button, or the live microphone;
    the turns as a plot and a table (and a CSV)."""
    import gradio as gr

    def predict(path):
        try:
            rows, figure, csv_path, notes = recordings.predict(path)
        except UserError as err:
            raise gr.Error(html.escape(str(err), quote=False), print_exception=False) from None
        for note in notes:
            gr.Warning(html.escape(note, quote=False))
        return web_requests.shown(rows), figure, csv_path

    def start(message):
        if message:
            raise gr.Error(html.escape(message, quote=False), print_exception=False)
        return None, gr.Timer(active=True), "listening…"

    def follow(piece, session):
        session, rows, figure, status, going = live.follow(piece, session)
        if rows is None:
            return session, gr.skip(), gr.skip(), status, gr.Timer(active=going)
        return session, web_requests.shown(rows), figure, status, gr.Timer(active=going)

    with gr.Blocks(title=PAGE_TITLE, analytics_enabled=False, delete_cache=CACHE_SWEEP) as page:
        gr.Markdown(f"# {PAGE_TITLE}\n"
                    f"Arousal, dominance and valence of each speaking turn, predicted by "
                    f"**{html.escape(recordings.title)}**. {SCALE_NOTE}"
                    + (DEMO_NOTE if recordings.predictor.demo_models else ""))
        with gr.Tab("Recording"):
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", buttons=["download"],
                             label=f"Recording ({AUDIO_TYPES})", elem_id="recording")
            button = gr.Button("Predict", variant="primary", elem_id="predict")
            plot = gr.Plot(label="Arousal, dominance and valence over time", show_label=False, elem_id="plot")
            table = gr.Dataframe(label="Speaking turns", interactive=False, elem_id="turns")
            csv = gr.File(label="CSV", elem_id="csv")
        with gr.Tab("Live"):
            gr.Markdown("Press **Start** and speak: the turns found so far appear about every "
                        f"{web_live.UPDATE_SECONDS:g} s, the last one predicted as it grows.")
            with gr.Row():
                start_button = gr.Button("Start", variant="primary", elem_id="live-start")
                stop_button = gr.Button("Stop", elem_id="live-stop")
            status = gr.Markdown(elem_id="live-status")
            live_plot = gr.Plot(label="Live: arousal, dominance and valence", show_label=False,
                                elem_id="live-plot")
            live_table = gr.Dataframe(label="Speaking turns so far", interactive=False, elem_id="live-turns")
            piece = gr.Textbox(visible=False)
            session = gr.State()
            timer = gr.Timer(web_live.UPDATE_SECONDS, active=False)
        button.click(predict, inputs=audio, outputs=[table, plot, csv], api_name="predict",
                     concurrency_id="recordings")
        start_button.click(start, inputs=piece, outputs=[session, timer, status], js=web_live.START_SCRIPT,
                           api_visibility="private")
        stop_button.click(None, js=web_live.STOP_SCRIPT)
        timer.tick(follow, inputs=[piece, session], outputs=[session, live_table, live_plot, status, timer],
                   js=web_live.DRAIN_SCRIPT, trigger_mode="once", concurrency_id="live",
                   show_progress="hidden", api_visibility="private")
    return page


def serve(args, temp_dir):
    """Load the models, build the page and serve it until interrupted."""
    import gradio as gr
    from starlette.middleware import Middleware

    predictor = load_predictor(args)
    script_backends(predictor)
    uploads = web_requests.UploadCount()
    tables = os.path.join(temp_dir, "tables")
    os.makedirs(tables)
    recordings = web_requests.Recordings(predictor, tables, uploads)
    recordings.warm_up()
    web_requests.LOG.info("models loaded: %s", recordings.title)
    page = build_page(recordings, web_live.LiveMode(recordings))
    uploads.watch(page)
    page.queue(default_concurrency_limit=args.concurrency)
    theme = gr.themes.Default(font=SYSTEM_FONTS[0], font_mono=SYSTEM_FONTS[1])
    refused = Middleware(web_requests.LogRefusedUploads, max_file_mb=args.max_file_mb)
    try:
        page.launch(server_name=args.host, server_port=args.port, share=False, inbrowser=False,
                    max_file_size=int(args.max_file_mb * BYTES_PER_MB), theme=theme, js=web_live.CAPTURE_SCRIPT,
                    ssr_mode=False, mcp_server=False, run_history=False, show_error=True, quiet=True,
                    app_kwargs={"middleware": [refused]}, prevent_thread_lock=True)
    except OSError as err:
        raise UserError(f"cannot serve on {args.host}:{args.port} ({err}): pick another --port") from None
    web_requests.LOG.info("serving on http://%s:%d (queue: %d at once, uploads up to %g MiB)",
                          args.host, page.server_port, args.concurrency, args.max_file_mb)
    if not ipaddress.ip_address(socket.gethostbyname(args.host)).is_loopback:
        web_requests.LOG.warning("--host %s: whoever can reach this machine can use the page (no login); "
                                 "the microphone works only on http://localhost or over https", args.host)
    try:
        while page.is_running:
            time.sleep(WAIT_SECONDS)
    finally:
        page.close()


def stop_on_sigterm():
    """SIGTERM stops the server as Ctrl-C does, so that its temporary folder is removed."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    web_requests.LOG.setLevel(logging.INFO)
    web_requests.route_warnings()
    temp_dir = web_requests.make_temp_dir()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(temp_dir, "gradio"))
    stop_on_sigterm()
    try:
        serve(args, temp_dir)
    except KeyboardInterrupt:
        web_requests.LOG.info("stopped")
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0
