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
import subprocess
import urllib.error
import urllib.parse
import urllib.request

from deepemocluster.releases import (LICENCE, PYTHON, RAW_URL, RELEASED_DIR, RELEASES, REPOSITORY,
                                     REPOSITORY_URL, fetch_command, offline_route, release_dirs,
                                     require_type, same_folder)
from utils import TEMPORAL_TYPES, UserError, atomic_path, run_cli

TIMEOUT_S = 60.0
GIT_TIMEOUT_S = 60.0
BLOCK_SIZE = 1 << 16
AFTER_FULL_DISK = ("Free space, then run the same command again: the files already installed "
                   "verify and are skipped.")


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

    def __init__(self, release, folder, dest, temporal_type=None):
        self.release, self.folder, self.dest = release, folder, dest
        self.temporal_type = temporal_type   # the one type asked for, or None for all
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

    def git(self, *args):
        """git's answer in the copy (its output), or None where git gives none."""
        try:
            done = subprocess.run(["git", "-C", self.folder, *args], capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    def clone_state(self):
        """Where a clone stands towards the release's commit: 'at' (HEAD is the commit),
        'holds' (the commit is in its history, HEAD elsewhere) or 'lacks' (not in its history);
        None for an unpacked archive, or a folder git cannot read as the top of a clone."""
        if not os.path.exists(os.path.join(self.folder, ".git")):
            return None
        top = self.git("rev-parse", "--show-toplevel")
        if top is None or os.path.realpath(top) != os.path.realpath(self.folder):
            return None
        commit = self.release.commit
        if self.git("rev-parse", "--verify", "--quiet", "HEAD") == commit:
            return "at"
        return "holds" if self.git("cat-file", "-e", f"{commit}^{{commit}}") is not None else "lacks"

    def way_to_commit(self, state, paths):
        """What to do about the files `paths` that are missing or differ, given the clone's state:
        restore them from HEAD when the clone is at the commit already, say that a clone without
        the commit cannot give them, and otherwise name the commit to check out."""
        commit = self.release.commit
        if state == "at":
            return (f"{self.folder} is at commit {commit} already, so they are missing from or "
                    f"changed in its working tree: restore them with: "
                    f"git -C {self.folder} checkout HEAD -- {' '.join(paths)}")
        if state == "lacks":
            return (f"{self.release.name} needs {REPOSITORY_URL} at commit {commit}, which the clone "
                    f"{self.folder} does not hold (not in its history: no checkout there gives these "
                    f"files; fetch the commit where GitHub is reachable, git -C {self.folder} fetch "
                    f"origin {commit}, or unpack {REPOSITORY_URL}/archive/{commit}.zip and give "
                    f"--from that folder)")
        return self.at_commit()

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

    def complete_types(self, release):
        """The temporal types of `release` whose every file (models and NormTerm) verifies in the copy."""
        return [mt for mt in release.temporal_types
                if not any(self.problem(p, b) for p, b in release.files(mt).items())]

    def offer(self, release, complete):
        """The commands that install the complete types of `release` from the copy."""
        if not complete:
            return ""
        commands = ", or: ".join(fetch_command(release.name, mt, self.dest, f"--from {self.folder}")
                                 for mt in complete)
        which = (f"the {', '.join(complete)} models of {release.name}" if release is self.release else
                 f"{release.name}'s {', '.join(complete)} models (another release, at commit "
                 f"{release.commit[:7]})")
        return (f" It holds {which} complete; install "
                f"{'them' if len(complete) == 1 else 'one type'} with: {commands}")

    def other_releases_offer(self):
        """The commands that install what other releases hold complete in the copy: of the types
        asked for where it holds them, else of every type it holds."""
        asked = [self.temporal_type] if self.temporal_type else self.release.temporal_types
        offers = []
        for other in RELEASES.values():
            if other is self.release:
                continue
            complete = self.complete_types(other)
            offers.append(self.offer(other, [mt for mt in complete if mt in asked] or complete))
        return "".join(offers)

    def check(self, files):
        """Verify every file to be installed in the copy before any is: one that is missing
        or differs is listed, and the error says how the copy gives the release (restore its
        files, check out the commit, or that a clone without the commit cannot), and the
        temporal types it does hold complete, of this release or, where it holds none and
        cannot give the release, of another, with the command that installs each."""
        problems = {p: why for p, b in files.items() if (why := self.problem(p, b))}
        if not problems:
            return
        for path, (kind, detail) in problems.items():
            print(f"{kind:9} {self.origin(path)}{f' ({detail})' if detail else ''}")
        missing = sum(kind == "missing" for kind, _ in problems.values())
        state = self.clone_state()
        complete = self.complete_types(self.release)
        offer = self.offer(self.release, complete)
        if not complete and state in (None, "lacks"):
            offer += self.other_releases_offer()
        raise UserError(f"{len(problems)} of the {len(files)} file(s) to install are missing or differ "
                        f"in {self.folder} ({missing} missing, {len(problems) - missing} differ; listed "
                        f"above): {self.way_to_commit(state, list(problems))}. Nothing was installed."
                        f"{self.inner_hint()}{offer}")

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
        source = LocalCopy(release, args.from_dir, args.dest, args.model_type)
    else:
        source = Download(release, args.base_url, args.timeout,
                          offline_route(release, args.model_type, args.dest))
    fetched, skipped = install_release(release, args.model_type, source, args.dest)
    print(f"{release.name} installed: {fetched} file(s) {source.verb}, {skipped} already there")
    print("\n".join(usage_lines(release, args.model_type, args.dest)))
    return 0


if __name__ == "__main__":
    run_cli(main, disk_full=AFTER_FULL_DISK)
