"""Fetch the authors' released models and NormTerm (MIT licence) into released/<release>/.

    .venv/bin/python fetch_models.py v1.8 [-mt Temp-Trans] [--from LOCAL_CLONE] [--dest ./released]
    .venv/bin/python fetch_models.py v1.8-ssl

From the authors' public repository
https://github.com/winston-lin-wei-cheng/Temporal-Enhanced-DeepEmoCluster
(W.-C. Lin and C. Busso, Speech Communication 157 (2024) 103027), at a pinned
commit, as raw files (or from a local copy of it with --from). Every file is
checked against its git blob id and renamed into place only once it verifies;
files already installed that verify are skipped, so a second run fetches only
what is missing. The demo models in ./trained_models are never touched.
"""
import argparse
import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request

from utils import EMOTIONS, TEMPORAL_TYPES, UserError, atomic_path, run_cli

REPOSITORY = "winston-lin-wei-cheng/Temporal-Enhanced-DeepEmoCluster"
REPOSITORY_URL = f"https://github.com/{REPOSITORY}"
RAW_URL = "https://raw.githubusercontent.com"
PYTHON = ".venv/bin/python"          # the interpreter as the README names it
RELEASED_DIR = "./released"
TIMEOUT_S = 60.0
BLOCK_SIZE = 1 << 16
AFTER_FULL_DISK = ("Free space, then run the same command again: the files already installed "
                   "verify and are skipped.")
LICENCE = (f"Models by W.-C. Lin and C. Busso, MIT licence, {REPOSITORY_URL}; cite "
           "W.-C. Lin and C. Busso, Speech Communication 157 (2024) 103027, "
           "doi:10.1016/j.specom.2023.103027")

NORM_TERM_BLOBS = {
    "NormTerm/act_norm_means.mat": "b1292a53ae235e3b585411a343b694d0eb4d5f67",
    "NormTerm/act_norm_stds.mat": "c92a673398ff57fd2004dc893eba11d70878402a",
    "NormTerm/dom_norm_means.mat": "d19d6de4973f2bf50ac1f8d16b4866cc33ce497e",
    "NormTerm/dom_norm_stds.mat": "75b6f3e7f925d31a1cc63e44add22ddc4d95da3f",
    "NormTerm/feat_norm_means.mat": "251e213f8d97df2b4ca7d93fe6dc18a2e58d1ac7",
    "NormTerm/feat_norm_stds.mat": "d532280538aba6743de9478ddfe237ef4c745137",
    "NormTerm/val_norm_means.mat": "8b1cfbd4effa97df571fc9290b1217800d063cb6",
    "NormTerm/val_norm_stds.mat": "92039385b59d3fc23a3823c080a97216e15ea952",
}

V18_MODEL_BLOBS = {
    ("Act", "Temp-GRU"): "f829268da776a6b5ada4adecfa2f42d18cbebc8d",
    ("Act", "Temp-CNN"): "8f9863662bee07509e7bc209c1aa2c0d75c35191",
    ("Act", "Temp-Trans"): "a069e40fa760a3c01e0aed0fac2cfdeb120df82f",
    ("Act", "Temp-Triplet"): "e635325a4dfb54e48e7d588b7f9cd5a9d7dfd0b2",
    ("Dom", "Temp-GRU"): "cc8d3284e36258cc97d3885ca4fce3a9900f77d8",
    ("Dom", "Temp-CNN"): "ed7652f88e4ff1b14d69df0502ecd49172ab68f7",
    ("Dom", "Temp-Trans"): "15702fb0d401a2a5ff970f62d842e416280e0694",
    ("Dom", "Temp-Triplet"): "0e82a9b52db854adcb94316add417345956367cb",
    ("Val", "Temp-GRU"): "d56b1448b6dee019e7336a07ff6baaf5671a87ff",
    ("Val", "Temp-CNN"): "0a2474d9850d98622701f6af9ab8362f29630537",
    ("Val", "Temp-Trans"): "8389029534a3629dad0cb4620afccb41da09bcb2",
    ("Val", "Temp-Triplet"): "93d506f16aae1c0f2a16c85cd411941b166ea015",
}

SSL_MODEL_BLOBS = {
    ("Act", "Temp-Trans"): "81b8e325f7a54fe12793ace0b39fb96add574bc4",
    ("Dom", "Temp-Trans"): "44970e10c7e3c0c8165b7b5cdfd401cab1b55a0c",
    ("Val", "Temp-Trans"): "09072223304884e9f7781e433fab4ad198d83f0d",
}


class Release:
    """One release of the authors' models: the commit, the settings its file names
    encode (epochs, batch, per-attribute K and unlabelled N) and every file's blob id."""

    def __init__(self, name, commit, model_blobs, clusters, unlabel, epochs=30, batch=64):
        self.name, self.commit = name, commit
        self.epochs, self.batch = epochs, batch
        self.clusters = clusters          # {emotion: K}
        self.unlabel = unlabel            # {emotion: N}, 0 for the supervised models
        self.temporal_types = sorted({mt for _, mt in model_blobs}, key=TEMPORAL_TYPES.index)
        self.model_blobs = model_blobs

    def model_path(self, emotion, temporal_type):
        from model import checkpoint_name

        return "trained_models/" + checkpoint_name(self.epochs, self.batch, self.clusters[emotion],
                                                   emotion, temporal_type, self.unlabel[emotion])

    def files(self, temporal_type=None):
        """{repository path: blob id} of the release (one temporal type, if given)."""
        out = {self.model_path(e, mt): blob for (e, mt), blob in self.model_blobs.items()
               if temporal_type in (None, mt)}
        out.update(NORM_TERM_BLOBS)
        return out


RELEASES = {
    "v1.8": Release("v1.8", "daeb08605a2ae68c5160b3d9ea07cc5c64fc625f", V18_MODEL_BLOBS,
                    clusters={e: 10 for e in EMOTIONS}, unlabel={e: 0 for e in EMOTIONS}),
    "v1.8-ssl": Release("v1.8-ssl", "bc0eaf7f910185d039b9424ac9e3be5232841141", SSL_MODEL_BLOBS,
                        clusters={"Act": 30, "Dom": 30, "Val": 10},
                        unlabel={"Act": 100000, "Dom": 100000, "Val": 15000}),
}


def release_dirs(name, root=RELEASED_DIR):
    """(model folder, NormTerm folder) of a fetched release."""
    base = os.path.join(root, name)
    return os.path.join(base, "trained_models"), os.path.join(base, "NormTerm")


def same_folder(a, b):
    return os.path.abspath(a) == os.path.abspath(b)


def require_type(release, temporal_type):
    """Refuse a temporal type the release has no models of."""
    if temporal_type not in release.temporal_types:
        raise UserError(f"release {release.name} has no {temporal_type} models (it has: "
                        f"{', '.join(release.temporal_types)})")


def fetch_command(name, temporal_type=None, dest=RELEASED_DIR, source=""):
    """The fetch_models.py command line that installs release `name` (one temporal type,
    into `dest`, from `source`: '' to download, or '--from DIR')."""
    return (f"{PYTHON} fetch_models.py {name}{' -mt ' + temporal_type if temporal_type else ''}"
            f"{'' if same_folder(dest, RELEASED_DIR) else ' --dest ' + dest}"
            f"{' ' + source if source else ''}")


def offline_route(release, temporal_type=None, dest=RELEASED_DIR):
    """How to install without network access to GitHub: --from a local copy at the commit."""
    return (f"without network access to GitHub, install from a local copy of {REPOSITORY_URL} "
            f"at commit {release.commit} (a clone checked out there, or its archive "
            f"{REPOSITORY_URL}/archive/{release.commit}.zip unpacked): "
            f"{fetch_command(release.name, temporal_type, dest, '--from DIR')}")


def check_release(name, temporal_type, root=RELEASED_DIR):
    """The Release `name`, after checking that its files for `temporal_type` are installed;
    a clear error gives both ways to install them otherwise (download, or --from a copy)."""
    if name not in RELEASES:
        raise UserError(f"unknown release {name!r}; the authors' releases are: {', '.join(RELEASES)}")
    release = RELEASES[name]
    require_type(release, temporal_type)
    base = os.path.join(root, name)
    missing = [p for p in release.files(temporal_type) if not os.path.isfile(os.path.join(base, p))]
    if missing:
        mt = None if len(release.temporal_types) == 1 else temporal_type
        raise UserError(f"release {name} is not installed in {base} ({len(missing)} file(s) missing, "
                        f"e.g. {missing[0]}). Fetch it with: {fetch_command(name, mt, root)}; or, "
                        f"{offline_route(release, mt, root)}")
    return release


# --- fetching -----------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("release", choices=list(RELEASES), help="the release to install")
    p.add_argument("-mt", "--model_type", choices=TEMPORAL_TYPES,
                   help="install the models of this temporal type only (default: all the release has)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--from", dest="from_dir", metavar="DIR",
                        help="install from a local copy of the repository (a git clone or an "
                             "unpacked archive) instead of downloading")
    source.add_argument("--base-url", default=RAW_URL,
                        help=f"where the raw files are served, as <URL>/<owner>/<repo>/<commit>/<path> "
                             f"(default {RAW_URL})")
    p.add_argument("--dest", default=RELEASED_DIR,
                   help=f"the release goes into DEST/<release> (default {RELEASED_DIR})")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S,
                   help=f"seconds to wait for the server (default {TIMEOUT_S:g})")
    args = p.parse_args(argv)
    if not args.timeout > 0:
        p.error("--timeout must be a positive number of seconds")
    return args


def blob_id(path):
    """The git blob id of a file: SHA-1 of `blob <size>\\0` and the content."""
    digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


def file_url(base_url, commit, path):
    return f"{base_url.rstrip('/')}/{REPOSITORY}/{commit}/{urllib.parse.quote(path)}"


def copy_blocks(read, write):
    """Copy block by block until `read` returns nothing; the number of bytes copied."""
    total = 0
    while block := read(BLOCK_SIZE):
        write(block)
        total += len(block)
    return total


def block_writer(f, name):
    """f.write, with a full or unwritable disk reported as a UserError naming `name`."""
    def write(block):
        try:
            f.write(block)
        except OSError as err:
            raise UserError(f"could not write {name}: {err.strerror or err}") from None
    return write


class NetworkError(UserError):
    """A download that failed on the way: the server unreachable, an HTTP error, a cut connection."""


def download(url, write, timeout):
    """Stream `url` into `write`; a network or HTTP failure, or a short body, is a NetworkError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            size = response.headers.get("Content-Length")
            got = copy_blocks(response.read, write)
    except urllib.error.HTTPError as err:
        raise NetworkError(f"could not fetch {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise NetworkError(f"could not fetch {url}: {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:
        raise NetworkError(f"could not fetch {url}: {err or type(err).__name__}") from None
    if size is not None and got != int(size):
        raise NetworkError(f"could not fetch {url}: the connection closed after {got} of {size} bytes")


def copy_local(src, write):
    """Copy a file of the local repository copy into `write`."""
    try:
        with open(src, "rb") as f:
            copy_blocks(f.read, write)
    except OSError as err:
        raise UserError(f"could not read {src}: {err.strerror or err}") from None


class Download:
    """The release's files as raw files from the server, at the release's commit."""
    verb = "fetched"

    def __init__(self, release, base_url, timeout, offline_hint):
        self.release, self.base_url, self.timeout = release, base_url, timeout
        self.offline_hint = offline_hint     # added to a failed download's message

    def __str__(self):
        return file_url(self.base_url, self.release.commit, "")

    def origin(self, path):
        """The URL `path` comes from."""
        return file_url(self.base_url, self.release.commit, path)

    def check(self, files):
        """Nothing to check before downloading: each file is verified as it arrives."""

    def copy(self, path, write):
        try:
            download(self.origin(path), write, self.timeout)
        except NetworkError as err:
            raise NetworkError(f"{err}; {self.offline_hint}") from None

    def mismatch_hint(self):
        return ""


class LocalCopy:
    """The release's files from a local copy of the authors' repository (a clone or an
    unpacked archive), which must be at the release's commit."""
    verb = "copied"

    def __init__(self, release, folder, dest):
        self.release, self.folder, self.dest = release, folder, dest
        self.blob_ids = {}                   # path → blob id in the copy, or why there is none

    def __str__(self):
        return self.folder

    def origin(self, path):
        """The local file `path` comes from."""
        return os.path.join(self.folder, path)

    def copy(self, path, write):
        copy_local(self.origin(path), write)

    def at_commit(self):
        """What the copy must be: the repository at the release's commit (and how, for a clone)."""
        commit = self.release.commit
        how = (f" (git -C {self.folder} checkout {commit})"
               if os.path.exists(os.path.join(self.folder, ".git")) else "")
        return f"{self.release.name} needs {REPOSITORY_URL} at commit {commit}{how}"

    def mismatch_hint(self):
        return f"; is {self.folder} at commit {self.release.commit}? {self.at_commit()}"

    def problem(self, path, blob):
        """Why the copy's `path` cannot be installed, as (kind, detail): ('missing', ''),
        ('unreadable', reason) or ('differs', blob ids); None when it verifies."""
        if path not in self.blob_ids:
            src = self.origin(path)
            try:
                self.blob_ids[path] = blob_id(src) if os.path.isfile(src) else None
            except OSError as err:
                self.blob_ids[path] = ("unreadable", err.strerror or str(err))
        got = self.blob_ids[path]
        if got is None:
            return "missing", ""
        if isinstance(got, tuple):
            return got
        return None if got == blob else ("differs", f"git blob id {got}, expected {blob}")

    def complete_types(self):
        """The temporal types whose every file (models and NormTerm) verifies in the copy."""
        return [mt for mt in self.release.temporal_types
                if not any(self.problem(p, b) for p, b in self.release.files(mt).items())]

    def check(self, files):
        """Verify every file to be installed in the copy before any is: one that is missing
        or differs is listed, and the error names the commit the copy must be at and the
        temporal types it does hold complete, with the command that installs each."""
        problems = {p: why for p, b in files.items() if (why := self.problem(p, b))}
        if not problems:
            return
        for path, (kind, detail) in problems.items():
            print(f"{kind:9} {self.origin(path)}{f' ({detail})' if detail else ''}")
        missing = sum(kind == "missing" for kind, _ in problems.values())
        complete = self.complete_types()
        offer = ""
        if complete:
            commands = ", or: ".join(fetch_command(self.release.name, mt, self.dest, f"--from {self.folder}")
                                     for mt in complete)
            offer = (f" It holds the {', '.join(complete)} models of {self.release.name} complete; "
                     f"install {'them' if len(complete) == 1 else 'one type'} with: {commands}")
        raise UserError(f"{len(problems)} of the {len(files)} file(s) to install are missing or differ "
                        f"in {self.folder} ({missing} missing, {len(problems) - missing} differ; listed "
                        f"above): {self.at_commit()}. Nothing was installed.{self.inner_hint()}{offer}")

    def inner_hint(self):
        """Where the release's files are when the folder given holds none but a subfolder does
        (an archive unpacked into the folder given)."""
        if any(os.path.exists(self.origin(p)) for p in self.release.files()):
            return ""
        inner = [d for d in sorted(os.listdir(self.folder))
                 if os.path.isdir(os.path.join(self.folder, d, "trained_models"))]
        if not inner:
            return f" None of the release's files is in {self.folder}."
        return (f" None of the release's files is in {self.folder}, but {os.path.join(self.folder, inner[0])} "
                f"holds a trained_models/ folder: give --from {os.path.join(self.folder, inner[0])}")


def install_file(source, path, blob, target):
    """Copy one file to a temporary name beside `target`, check its blob id, rename it into
    place. A file that does not verify is refused and nothing of it is kept."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            source.copy(path, block_writer(f, target))
        got = blob_id(tmp)
        if got != blob:
            raise UserError(f"refused {source.origin(path)}: git blob id {got}, expected {blob}"
                            f"{source.mismatch_hint()}")
    return os.path.getsize(target)


def installed_ok(target, blob):
    """Whether `target` is installed and verifies; a copy that does not verify is removed."""
    if not os.path.isfile(target):
        return False
    got = blob_id(target)
    if got == blob:
        return True
    print(f"removed   {target}: git blob id {got}, expected {blob}; fetching it again")
    os.remove(target)
    return False


def install_release(release, temporal_type, source, dest):
    """Install the release's files (one temporal type, if given) under dest/<release>;
    (files fetched, files already there). The source checks the files still needed first."""
    base = os.path.join(dest, release.name)
    files = release.files(temporal_type)
    print(f"{release.name}: {len(files)} files from {source} into {base}")
    needed = {}
    for path, blob in files.items():
        if installed_ok(os.path.join(base, path), blob):
            print(f"skipped   {path} (installed, blob id verifies)")
        else:
            needed[path] = blob
    source.check(needed)
    for path, blob in needed.items():
        target = os.path.join(base, path)
        try:
            size = install_file(source, path, blob, target)
        except OSError as err:
            raise UserError(f"could not write {target}: {err.strerror or err}") from None
        print(f"{source.verb:9} {path} ({size} bytes, blob id verified)")
    return len(needed), len(files) - len(needed)


def usage_lines(release, temporal_type, dest):
    """Where the release is, how to use it, and whose models they are."""
    models, norm = release_dirs(release.name, dest)
    types = [temporal_type] if temporal_type else release.temporal_types
    lines = [f"models in {models}", f"NormTerm in {norm}", "predict a folder of WAVs with:"]
    lines += [f"  {PYTHON} prediction_process.py --release {release.name} -mt {mt} --input DIR"
              for mt in types]
    if not same_folder(dest, RELEASED_DIR):
        lines.append(f"(--release looks in {RELEASED_DIR}; this release is in {dest})")
    lines.append(LICENCE)
    return lines


def main(argv=None):
    args = parse_args(argv)
    release = RELEASES[args.release]
    if args.model_type:
        require_type(release, args.model_type)
    if args.from_dir:
        if not os.path.isdir(args.from_dir):
            raise UserError(f"--from {args.from_dir}: no such folder")
        source = LocalCopy(release, args.from_dir, args.dest)
    else:
        source = Download(release, args.base_url, args.timeout,
                          offline_route(release, args.model_type, args.dest))
    fetched, skipped = install_release(release, args.model_type, source, args.dest)
    print(f"{release.name} installed: {fetched} file(s) {source.verb}, {skipped} already there")
    print("\n".join(usage_lines(release, args.model_type, args.dest)))
    return 0


if __name__ == "__main__":
    run_cli(main, disk_full=AFTER_FULL_DISK)
