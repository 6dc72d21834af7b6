"""Reading back what the scripts wrote: CSV rows, every file's bytes, temporary files left."""
import csv
import os


def read_rows(path):
    """A CSV's rows as dicts keyed by its header."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_csv(path):
    """A CSV's rows as lists, the header first."""
    with open(path, newline="") as f:
        return list(csv.reader(f))


def file_contents(root):
    """{path relative to root: bytes} of every file under root."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            full = os.path.join(folder, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, root).replace(os.sep, "/")] = f.read()
    return out


def leftovers(folder):
    """Temporary files left behind by an interrupted write."""
    return [n for _, _, names in os.walk(folder) for n in names if n.endswith(".tmp")]
