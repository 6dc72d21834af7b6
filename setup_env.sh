# Sourced by demo.sh and test.sh: make the virtual environment in .venv/ and install
# requirements.txt into it when that file changed since the last install (a faiss build
# swapped in by hand, as docs/install.md's GPU install does, is then left alone).
[ -x .venv/bin/python ] || python3 -m venv .venv
wanted="$(cksum < requirements.txt)"     # POSIX: on Linux and macOS alike
if [ "$(cat .venv/.requirements.sum 2>/dev/null)" != "$wanted" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
    echo "$wanted" > .venv/.requirements.sum
fi
