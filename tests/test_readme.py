"""The README and the docs/ pages as a newcomer follows them: the README's demo steps run as
written in a clean copy of the repository and leave every committed file as it was; demo.sh runs
the same steps; no training command in any page names a committed checkpoint or writes into a
committed folder; every relative link resolves, to a file and to a heading; the README stays an
introduction (at most 300 lines) whose guides are the docs/ pages."""
import filecmp
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys


import main as train_main
from support import ROOT
from support.docs import README, anchors, links, page_text, pages, section

DEMO_HEADING = "### The demo, step by step"
GUIDES_HEADING = "## Guides"
README_MOST_LINES = 300
LOOP_VALUES = {"emo": ("Act", "Dom", "Val"), "mt": ("Temp-GRU", "Temp-CNN", "Temp-Trans", "Temp-Triplet"),
               "n": ("0", "240"), "split": ("Test1", "Test2"), "p": ("fp32", "auto")}


def tracked_files():
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def commands(block):
    """The command lines of a bash block: comments dropped, continuation lines joined."""
    block = re.sub(r"\\\n\s*", " ", block)
    return [line.split("  #")[0].strip() for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def demo_steps():
    return commands(bash_blocks(section(README, DEMO_HEADING))[0])


def every_command():
    """Every command line of every page's bash blocks."""
    for page in pages():
        for block in bash_blocks(page_text(page)):
            yield from commands(block)


def python_script(cmd):
    """(script, arguments) of a `.venv/bin/python script.py …` line, or of the script a
    `[VAR=value …] [srun] .venv/bin/torchrun … script.py …` line starts, or None."""
    words = shlex.split(cmd)
    while words and re.match(r"^\w+=", words[0]):
        words = words[1:]
    if words[:1] == ["srun"]:
        words = words[1:]
    if words[:1] == [".venv/bin/torchrun"]:
        scripts = [i for i, w in enumerate(words) if w.endswith(".py")]
        return (words[scripts[0]], words[scripts[0] + 1:]) if scripts else None
    if len(words) < 2 or words[0] != ".venv/bin/python" or not words[1].endswith(".py"):
        return None
    return words[1], words[2:]


def expand(cmd):
    """A command line with its loop variables ($emo, $mt, …) given every value they take in
    the pages' loops, and path variables ($C, $L) given a placeholder."""
    names = [n for n in LOOP_VALUES if re.search(r"\$%s\b" % n, cmd)]
    cmd = re.sub(r"\$[CL]\b", "/corpus", cmd)
    for values in itertools.product(*(LOOP_VALUES[n] for n in names)):
        line = cmd
        for name, value in zip(names, values):
            line = re.sub(r"\$%s\b" % name, value, line)
        yield line


def test_the_demo_steps_are_the_steps_of_demo_sh():
    steps = [python_script(c) for c in demo_steps()]
    assert steps and all(steps)
    with open(os.path.join(ROOT, "demo.sh")) as f:
        script = f.read()
    flags = dict(re.findall(r'^(\w+)="(.*)"$', script, flags=re.M))
    ran = []
    for line in script.splitlines():
        match = re.search(r"\$PY (\S+\.py)(.*)$", line)
        if match:
            args = re.sub(r"\$(\w+)", lambda m: flags[m.group(1)], match.group(2))
            ran.append((match.group(1), shlex.split(args)))
    assert ran == steps


def test_no_training_command_in_the_docs_names_a_committed_checkpoint():
    committed = set(tracked_files())
    seen = 0
    for cmd in every_command():
        for line in expand(cmd):
            script = python_script(line.split(";")[-1].strip().removeprefix("do ").strip())
            if script is None or script[0] != "main.py":
                continue
            run = train_main.TrainingFiles.from_args(train_main.parse_args(script[1]))
            path = os.path.relpath(os.path.join(ROOT, run.checkpoint), ROOT)
            assert path not in committed, line
            seen += 1
    assert seen >= 5


def relative_links():
    """(page, the linked path relative to the repository, anchor) of every relative link of
    every page; the path is None for an anchor on the page itself."""
    for page in pages():
        for target, anchor in links(page):
            yield page, os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else None, anchor


def test_every_file_the_docs_link_exists():
    linked = [(page, path) for page, path, _ in relative_links() if path]
    assert len(linked) >= 30
    for page, path in linked:
        assert os.path.exists(os.path.join(ROOT, path)), f"{page}: {path}"


def test_every_anchor_the_docs_link_is_a_heading():
    anchored = [(page, path or page, anchor) for page, path, anchor in relative_links() if anchor]
    assert len(anchored) >= 20
    for page, path, anchor in anchored:
        assert anchor in anchors(path), f"{page}: {path}#{anchor}"


def test_the_readme_is_an_introduction_whose_guides_are_the_docs_pages():
    assert len(page_text(README).splitlines()) <= README_MOST_LINES
    guides = [t for t, _ in re.findall(r"\]\(([^)#]+)(#[^)]*)?\)", section(README, GUIDES_HEADING))]
    for target in guides:
        assert target.startswith("docs/") and os.path.isfile(os.path.join(ROOT, target)), target
    assert sorted(guides) == [p for p in pages() if p != README]


def test_the_demo_steps_run_in_a_clean_copy_and_leave_committed_files_untouched(tmp_path):
    """The README's demo steps as a newcomer runs them (training shortened to 1 epoch, the
    corpus to a quarter of its turns), in a copy of the committed files: every committed file
    is byte-identical afterwards."""
    clone = tmp_path / "clone"
    files = tracked_files()
    for rel in files:
        os.makedirs(clone / os.path.dirname(rel), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), clone / rel)
    for cmd in demo_steps():
        script, args = python_script(cmd)
        args = ["1" if prev == "-ep" else a for prev, a in zip([""] + args, args)]
        if script == "make_demo_corpus.py":
            args += ["--size", "0.25"]
        done = subprocess.run([sys.executable, script, *args], cwd=clone, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr
    changed = [rel for rel in files if not filecmp.cmp(os.path.join(ROOT, rel), clone / rel, shallow=False)]
    assert changed == []
    assert (clone / "pred_result.csv").is_file()
    with open(os.path.join(ROOT, "demo.sh")) as f:
        closing_list = f.read().split("Outputs:")[1]
    made = sorted(set(os.listdir(clone)) - {rel.split("/")[0] for rel in files} - {"__pycache__"})
    assert {"cache", "demo_corpus", "demo_models", "NormTerm_demo", "pred_result.csv"} <= set(made)
    assert [n for n in made if f"./{n}" not in closing_list] == []
    assert any(n.endswith(".pth.tar") for n in os.listdir(clone / "demo_models"))


WRITTEN_BY = {"--output": None, "--out": None, "--plot": None, "--embeddings": None, "--cache-dir": None,
              "--dest": None, "--workdir": None, "--json": None, "--result-json": None,
              "--model-dir": ("main.py",), "--norm-dir": ("norm_para.py",)}
DEFAULT_WRITES = {"main.py": "trained_models", "norm_para.py": "NormTerm"}


def written_paths(script, args):
    """The paths a docs command line writes into, by its flags and the script's defaults."""
    paths, given = [], set()
    for flag, value in zip(args, args[1:] + [""]):
        flag = flag.split("=")[0]
        if flag in WRITTEN_BY and (WRITTEN_BY[flag] is None or script in WRITTEN_BY[flag]):
            paths.append(value)
            given.add(flag)
    if script in DEFAULT_WRITES and not given & {"--model-dir", "--norm-dir"}:
        paths.append(DEFAULT_WRITES[script])
    return paths


def test_no_docs_command_writes_into_a_committed_folder():
    committed_dirs = {rel.split("/")[0] for rel in tracked_files() if "/" in rel}
    seen = 0
    for cmd in every_command():
        for line in expand(cmd):
            script = python_script(line.split(";")[-1].strip().removeprefix("do ").strip())
            if script is None:
                continue
            for path in written_paths(os.path.basename(script[0]), script[1]):
                top = os.path.normpath(path).split(os.sep)[0]
                assert top not in committed_dirs, f"{line}: writes into the committed {top}/"
                seen += 1
    assert seen >= 20
