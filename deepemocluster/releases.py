"""The authors' released models (MIT licence): each release's pinned commit, the settings its file
names encode, every file's git blob id, where fetch_models.py installs it, and the check that a
release is installed (with both ways to install it when it is not).
"""
import os

from utils import EMOTIONS, PYTHON, TEMPORAL_TYPES, UserError

REPOSITORY = "winston-lin-wei-cheng/Temporal-Enhanced-DeepEmoCluster"
REPOSITORY_URL = f"https://github.com/{REPOSITORY}"
RAW_URL = "https://raw.githubusercontent.com"
RELEASED_DIR = "./released"
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
