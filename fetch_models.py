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
RAW_URL = "https://raw.githubusercontent.com"
RELEASED_DIR = "./released"
TIMEOUT_S = 60.0
BLOCK_SIZE = 1 << 16
AFTER_FULL_DISK = ("Free space, then run the same command again: the files already installed "
                   "verify and are skipped.")
LICENCE = (f"Models by W.-C. Lin and C. Busso, MIT licence, https://github.com/{REPOSITORY}; cite "
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


def check_release(name, temporal_type, root=RELEASED_DIR):
    """The Release `name`, after checking that its files for `temporal_type` are installed;
    a clear error says how to fetch them otherwise."""
    if name not in RELEASES:
        raise UserError(f"unknown release {name!r}; the authors' releases are: {', '.join(RELEASES)}")
    release = RELEASES[name]
    require_type(release, temporal_type)
    base = os.path.join(root, name)
    missing = [p for p in release.files(temporal_type) if not os.path.isfile(os.path.join(base, p))]
    if missing:
        raise UserError(f"release {name} is not installed in {base} ({len(missing)} file(s) missing, "
                        f"e.g. {missing[0]}). Fetch it with: .venv/bin/python fetch_models.py {name}"
                        f"{'' if len(release.temporal_types) == 1 else ' -mt ' + temporal_type}"
                        f"{'' if same_folder(root, RELEASED_DIR) else ' --dest ' + root}")
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


def download(url, write, timeout):
    """Stream `url` into `write`; a network or HTTP failure, or a short body, is a UserError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            size = response.headers.get("Content-Length")
            got = copy_blocks(response.read, write)
    except urllib.error.HTTPError as err:
        raise UserError(f"could not fetch {url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise UserError(f"could not fetch {url}: {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:
        raise UserError(f"could not fetch {url}: {err or type(err).__name__}") from None
    if size is not None and got != int(size):
        raise UserError(f"could not fetch {url}: the connection closed after {got} of {size} bytes")


def copy_local(src, write):
    """Copy a file of the local repository copy into `write`."""
    try:
        with open(src, "rb") as f:
            copy_blocks(f.read, write)
    except OSError as err:
        raise UserError(f"could not read {src}: {err.strerror or err}") from None


class Source:
    """Where a release's files come from: the raw-file server, or a local repository copy."""

    def __init__(self, release, base_url=RAW_URL, from_dir=None, timeout=TIMEOUT_S):
        self.release, self.base_url, self.from_dir, self.timeout = release, base_url, from_dir, timeout

    @property
    def verb(self):
        return "copied" if self.from_dir else "fetched"

    def __str__(self):
        if self.from_dir:
            return self.from_dir
        return file_url(self.base_url, self.release.commit, "")

    def origin(self, path):
        """The URL or local file `path` comes from."""
        if self.from_dir:
            return os.path.join(self.from_dir, path)
        return file_url(self.base_url, self.release.commit, path)

    def copy(self, path, write):
        if self.from_dir:
            copy_local(self.origin(path), write)
        else:
            download(self.origin(path), write, self.timeout)

    def mismatch_hint(self):
        if self.from_dir:
            return f"; is {self.from_dir} at commit {self.release.commit}?"
        return ""


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
    (files fetched, files already there)."""
    base = os.path.join(dest, release.name)
    files = release.files(temporal_type)
    print(f"{release.name}: {len(files)} files from {source} into {base}")
    fetched = skipped = 0
    for path, blob in files.items():
        target = os.path.join(base, path)
        if installed_ok(target, blob):
            print(f"skipped   {path} (installed, blob id verifies)")
            skipped += 1
            continue
        try:
            size = install_file(source, path, blob, target)
        except OSError as err:
            raise UserError(f"could not write {target}: {err.strerror or err}") from None
        print(f"{source.verb:9} {path} ({size} bytes, blob id verified)")
        fetched += 1
    return fetched, skipped


def usage_lines(release, temporal_type, dest):
    """Where the release is, how to use it, and whose models they are."""
    models, norm = release_dirs(release.name, dest)
    types = [temporal_type] if temporal_type else release.temporal_types
    lines = [f"models in {models}", f"NormTerm in {norm}", "predict a folder of WAVs with:"]
    lines += [f"  python prediction_process.py --release {release.name} -mt {mt} --input DIR"
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
    if args.from_dir and not os.path.isdir(args.from_dir):
        raise UserError(f"--from {args.from_dir}: no such folder")
    source = Source(release, args.base_url, args.from_dir, args.timeout)
    fetched, skipped = install_release(release, args.model_type, source, args.dest)
    print(f"{release.name} installed: {fetched} file(s) {source.verb}, {skipped} already there")
    print("\n".join(usage_lines(release, args.model_type, args.dest)))
    return 0


if __name__ == "__main__":
    run_cli(main, disk_full=AFTER_FULL_DISK)
