# Sourced by demo.sh, test.sh and gpu_check.sh: make the virtual environment in .venv/ and
# install requirements.txt into it when its requirements changed since the last install
# (comments and blank lines do not count). A faiss build other than faiss-cpu installed in
# .venv (faiss-gpu-cu12 and the like, as docs/install.md's GPU install puts in) stays whatever
# changes in requirements.txt: faiss-cpu, which would overwrite it (both install the `faiss`
# package), is then left out of the install.
[ -x .venv/bin/python ] || python3 -m venv .venv
wanted="$(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' requirements.txt | cksum)"  # cksum: POSIX
if [ "$(cat .venv/.requirements.sum 2>/dev/null)" != "$wanted" ]; then
    other_faiss="$(.venv/bin/python - <<'EOF'
from importlib.metadata import distributions, packages_distributions
import re

names = {d.metadata["Name"] for d in distributions() if d.metadata["Name"]}
builds = set(packages_distributions().get("faiss", [])) | {n for n in names if re.match(r"faiss[-_.]gpu", n, re.I)}
print(" ".join(sorted(n for n in builds if n.lower().replace("_", "-") != "faiss-cpu")))
EOF
)"
    if [ -n "$other_faiss" ]; then
        echo "setup_env.sh: keeping $other_faiss (a faiss build other than faiss-cpu): installing requirements.txt without faiss-cpu"
        grep -v -i -E '^[[:space:]]*faiss-cpu([^[:alnum:]_.-]|$)' requirements.txt > .venv/.requirements.kept-faiss.txt
        .venv/bin/pip install -q --disable-pip-version-check -r .venv/.requirements.kept-faiss.txt
    else
        .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
    fi
    echo "$wanted" > .venv/.requirements.sum
fi
