"""fetch_models.py: verified, atomic installs of a release from a local HTTP server or a
local repository copy (never the internet), and the form of the real release table."""
import os
import re
import socket
import subprocess

import pytest

import fetch_models
from deepemocluster.releases import RELEASES, Release, check_release, release_dirs
from support.files import file_contents
from support.release_server import COMMIT, NORM_NAMES, git_blob_id, url_path
from utils import EMOTIONS, TEMPORAL_TYPES, UserError, current_umask, run_cli


def fetch(server, dest, *extra):
    return fetch_models.main(["fixture", "--base-url", server.base_url, "--dest", str(dest), *extra])


def cli_exit(argv, capsys):
    """(exit status, stderr) of the script run as from the command line."""
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: fetch_models.main(argv))
    return exc.value.code, capsys.readouterr().err


def test_installs_every_file_verified(release, server, tmp_path, capsys):
    _, contents = release
    assert fetch(server, tmp_path) == 0
    assert file_contents(tmp_path / "fixture") == contents
    models, norm = release_dirs("fixture", str(tmp_path))
    assert sorted(os.listdir(norm)) == sorted(os.path.basename(p) for p in NORM_NAMES)
    assert len(os.listdir(models)) == 6
    mode = os.stat(os.path.join(norm, "feat_norm_means.mat")).st_mode & 0o777
    assert mode == 0o666 & ~current_umask()
    out = capsys.readouterr().out
    assert sum(line.startswith("fetched ") for line in out.splitlines()) == len(contents)
    assert "  .venv/bin/python prediction_process.py --release fixture -mt Temp-Trans --input DIR" in out
    assert "MIT licence" in out and "winston-lin-wei-cheng/Temporal-Enhanced-DeepEmoCluster" in out

    server.requests.clear()
    assert fetch(server, tmp_path) == 0
    assert server.requests == []
    out = capsys.readouterr().out
    assert sum(line.startswith("skipped ") for line in out.splitlines()) == len(contents)


def test_model_type_limits_to_one_type_and_normterm(release, server, tmp_path):
    _, contents = release
    assert fetch(server, tmp_path, "-mt", "Temp-Trans") == 0
    wanted = {p for p in contents if "Temp-GRU" not in p}
    assert set(file_contents(tmp_path / "fixture")) == wanted
    assert sorted(server.requests) == sorted(url_path(p) for p in wanted)


def test_type_the_release_lacks_is_refused(release, capsys, tmp_path):
    code, err = cli_exit(["fixture", "-mt", "Temp-CNN", "--dest", str(tmp_path)], capsys)
    assert code == 1 and "no Temp-CNN models" in err
    code, err = cli_exit(["v1.8-ssl", "-mt", "Temp-GRU", "--dest", str(tmp_path)], capsys)
    assert code == 1 and "v1.8-ssl has no Temp-GRU models (it has: Temp-Trans)" in err
    assert not os.path.exists(tmp_path / "v1.8-ssl")


def test_unknown_release_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        fetch_models.main(["v9.9"])
    assert exc.value.code == 2 and "invalid choice: 'v9.9'" in capsys.readouterr().err
    with pytest.raises(UserError, match="unknown release 'v9.9'"):
        check_release("v9.9", "Temp-Trans")


def test_tampered_file_is_refused_and_not_kept(release, server, tmp_path, capsys):
    rel, contents = release
    path = rel.model_path("Act", "Temp-GRU")
    body = bytearray(contents[path])
    body[5000] ^= 1
    server.files[url_path(path)] = bytes(body)
    code, err = cli_exit(["fixture", "--base-url", server.base_url, "--dest", str(tmp_path)], capsys)
    assert code == 1
    assert err.count("\n") == 1
    assert path in err and rel.model_blobs[("Act", "Temp-GRU")] in err and git_blob_id(bytes(body)) in err
    models, _ = release_dirs("fixture", str(tmp_path))
    assert os.listdir(models) == []


def test_interrupted_download_leaves_nothing_partial(release, server, tmp_path, capsys):
    rel, contents = release
    cut = rel.model_path("Dom", "Temp-GRU")
    server.cut.add(url_path(cut))
    code, err = cli_exit(["fixture", "--base-url", server.base_url, "--dest", str(tmp_path)], capsys)
    assert code == 1 and url_path(cut) in err and "closed after" in err
    first = file_contents(tmp_path / "fixture")
    assert cut not in first and 0 < len(first) < len(contents)
    assert all(contents[p] == body for p, body in first.items())

    server.cut.clear()
    server.requests.clear()
    assert fetch(server, tmp_path) == 0
    assert sorted(server.requests) == sorted(url_path(p) for p in contents if p not in first)
    assert file_contents(tmp_path / "fixture") == contents


def test_ctrl_c_exits_130_with_nothing_partial(release, server, tmp_path, monkeypatch, capsys):
    _, contents = release
    calls = []
    real_copy = fetch_models.copy_blocks

    def copy_then_interrupt(read, write):
        calls.append(1)
        if len(calls) == 3:
            write(read(1000))
            raise KeyboardInterrupt
        return real_copy(read, write)

    monkeypatch.setattr(fetch_models, "copy_blocks", copy_then_interrupt)
    code, err = cli_exit(["fixture", "--base-url", server.base_url, "--dest", str(tmp_path)], capsys)
    assert code == 130 and "interrupted" in err
    first = file_contents(tmp_path / "fixture")
    assert len(first) == 2 and all(contents[p] == body for p, body in first.items())

    monkeypatch.setattr(fetch_models, "copy_blocks", real_copy)
    server.requests.clear()
    assert fetch(server, tmp_path) == 0
    assert len(server.requests) == len(contents) - 2
    assert file_contents(tmp_path / "fixture") == contents


def test_installed_file_that_does_not_verify_is_fetched_again(release, server, tmp_path):
    _, contents = release
    assert fetch(server, tmp_path) == 0
    path = NORM_NAMES[1]
    with open(tmp_path / "fixture" / path, "wb") as f:
        f.write(b"not the release")
    server.requests.clear()
    assert fetch(server, tmp_path) == 0
    assert server.requests == [url_path(path)]
    assert file_contents(tmp_path / "fixture") == contents


def test_unreachable_server_gives_one_line_error(release, tmp_path, capsys, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    code, err = cli_exit(["fixture", "--base-url", base, "--dest", str(tmp_path), "--timeout", "5"], capsys)
    assert code == 1
    assert err.startswith("error: could not fetch " + base + url_path(""))
    assert err.count("\n") == 1 and "Traceback" not in err
    # The offline route: a local copy at the release's commit, named in full, and the command.
    assert (f"; without network access to GitHub, install from a local copy of "
            f"{fetch_models.REPOSITORY_URL} at commit {COMMIT} (a clone checked out "
            f"there, or its archive {fetch_models.REPOSITORY_URL}/archive/{COMMIT}.zip "
            f"unpacked): .venv/bin/python fetch_models.py fixture --dest {tmp_path} --from DIR\n") in err
    monkeypatch.chdir(tmp_path)
    code, err = cli_exit(["fixture", "-mt", "Temp-GRU", "--base-url", base, "--timeout", "5"], capsys)
    assert code == 1 and err.endswith(": .venv/bin/python fetch_models.py fixture -mt Temp-GRU --from DIR\n")


def test_http_error_names_the_url(release, server, tmp_path, capsys):
    rel, _ = release
    missing = rel.model_path("Val", "Temp-Trans")
    del server.files[url_path(missing)]
    code, err = cli_exit(["fixture", "--base-url", server.base_url, "--dest", str(tmp_path)], capsys)
    assert code == 1 and server.base_url + url_path(missing) in err and "HTTP 404" in err
    assert "without network access to GitHub, install from a local copy" in err and COMMIT in err
    assert not os.path.exists(tmp_path / "fixture" / missing)


def write_local_copy(root, contents):
    for path, body in contents.items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        with open(os.path.join(root, path), "wb") as f:
            f.write(body)


def test_from_local_copy(release, tmp_path, capsys):
    _, contents = release
    clone = tmp_path / "clone"
    write_local_copy(clone, contents)
    dest = tmp_path / "released"
    assert fetch_models.main(["fixture", "--from", str(clone), "--dest", str(dest), "-mt", "Temp-GRU"]) == 0
    assert file_contents(dest / "fixture") == {p: c for p, c in contents.items() if "Temp-Trans" not in p}
    out = capsys.readouterr().out
    assert "copied    NormTerm/feat_norm_means.mat" in out
    assert "  .venv/bin/python prediction_process.py --release fixture -mt Temp-GRU --input DIR" in out

    code, err = cli_exit(["fixture", "--from", str(tmp_path / "nowhere"), "--dest", str(dest)], capsys)
    assert code == 1 and "no such folder" in err


def local_install(clone, dest, capsys, *extra):
    """(exit status, stdout, stderr) of fetch_models.py fixture --from clone --dest dest."""
    with pytest.raises(SystemExit) as exc:
        run_cli(lambda: fetch_models.main(["fixture", "--from", str(clone), "--dest", str(dest), *extra]))
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_copy_at_another_commit_is_checked_whole_before_anything_is_installed(release, tmp_path, capsys):
    """A copy lacking one Temp-Trans model and holding another that differs: nothing is
    installed; each file is listed, the error names the commit the copy must be at and the
    complete type with the command that installs it, which then installs exactly that type."""
    rel, contents = release
    clone, dest = tmp_path / "clone", tmp_path / "released"
    write_local_copy(clone, contents)
    gone, changed = rel.model_path("Act", "Temp-Trans"), rel.model_path("Val", "Temp-Trans")
    os.remove(clone / gone)
    (clone / changed).write_bytes(b"another version")
    code, out, err = local_install(clone, dest, capsys)
    assert code == 1 and err.count("\n") == 1
    assert not os.path.exists(dest / "fixture") or file_contents(dest / "fixture") == {}
    assert f"missing   {clone / gone}\n" in out
    assert (f"differs   {clone / changed} (git blob id {git_blob_id(b'another version')}, expected "
            f"{rel.model_blobs[('Val', 'Temp-Trans')]})\n") in out
    assert not [line for line in out.splitlines() if line.startswith(("copied", "fetched"))]
    command = f".venv/bin/python fetch_models.py fixture -mt Temp-GRU --dest {dest} --from {clone}"
    assert err == (f"error: 2 of the 9 file(s) to install are missing or differ in {clone} (1 missing, "
                   f"1 differ; listed above): fixture needs {fetch_models.REPOSITORY_URL} "
                   f"at commit {COMMIT}. Nothing was installed. It holds the Temp-GRU models of fixture "
                   f"complete; install them with: {command}\n")

    assert fetch_models.main(command.split()[2:]) == 0
    assert file_contents(dest / "fixture") == {p: c for p, c in contents.items() if "Temp-Trans" not in p}

    # Asked for the incomplete type alone, the error still offers the complete one.
    code, out, err = local_install(clone, dest, capsys, "-mt", "Temp-Trans")
    assert code == 1 and "2 of the 3 file(s) to install" in err and command in err
    assert "skipped   NormTerm/feat_norm_means.mat" in out


def test_copy_with_every_type_complete_but_a_wrong_normterm_offers_none(release, tmp_path, capsys):
    rel, contents = release
    clone = tmp_path / "clone"
    write_local_copy(clone, contents)
    with open(clone / NORM_NAMES[0], "ab") as f:
        f.write(b"x")
    os.mkdir(clone / ".git")
    code, out, err = local_install(clone, tmp_path / "released", capsys)
    assert code == 1
    assert f"differs   {clone / NORM_NAMES[0]} (git blob id" in out
    assert f"at commit {COMMIT} (git -C {clone} checkout {COMMIT}). Nothing was installed.\n" in err
    assert "It holds" not in err
    assert not os.path.exists(tmp_path / "released" / "fixture" / NORM_NAMES[0])


def test_archive_unpacked_one_level_down_is_pointed_to(release, tmp_path, capsys):
    _, contents = release
    inner = tmp_path / "unzipped" / "Temporal-Enhanced-DeepEmoCluster-0123456"
    write_local_copy(inner, contents)
    code, out, err = local_install(tmp_path / "unzipped", tmp_path / "released", capsys)
    assert code == 1 and "9 of the 9 file(s) to install are missing or differ" in err
    assert err.endswith(f"None of the release's files is in {tmp_path / 'unzipped'}, but {inner} holds a "
                        f"trained_models/ folder: give --from {inner}\n")
    assert local_install(inner, tmp_path / "released", capsys)[0] == 0
    assert file_contents(tmp_path / "released" / "fixture") == contents


def git(repo, *args):
    """Run git in `repo` (as a named author, unsigned); its output."""
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.org",
                           "-c", "commit.gpgsign=false", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def git_clone_of(root, contents):
    """A real git repository at `root` holding `contents` in one commit; that commit's id."""
    write_local_copy(root, contents)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "release")
    return git(root, "rev-parse", "HEAD")


def run_command(line):
    """Run a command line the error names (git, or fetch_models.py in this process)."""
    words = line.split()
    if words[0] == "git":
        subprocess.run(words, check=True, capture_output=True)
        return 0
    return fetch_models.main(words[2:])


def test_clone_at_the_commit_with_files_gone_is_told_to_restore_them_not_to_check_out(release, tmp_path,
                                                                                       capsys):
    rel, contents = release
    clone, dest = tmp_path / "clone", tmp_path / "released"
    rel.commit = git_clone_of(clone, contents)
    gone = [rel.model_path("Dom", "Temp-Trans"), NORM_NAMES[2]]
    for path in gone:
        os.remove(clone / path)
    code, out, err = local_install(clone, dest, capsys, "-mt", "Temp-Trans")
    assert code == 1 and f"missing   {clone / gone[0]}\n" in out
    restore = f"git -C {clone} checkout HEAD -- {gone[0]} {gone[1]}"
    assert err == (f"error: 2 of the 6 file(s) to install are missing or differ in {clone} (2 missing, "
                   f"0 differ; listed above): {clone} is at commit {rel.commit} already, so they are "
                   f"missing from or changed in its working tree: restore them with: {restore}. "
                   f"Nothing was installed.\n")
    assert run_command(restore) == 0
    assert local_install(clone, dest, capsys, "-mt", "Temp-Trans")[0] == 0
    assert file_contents(dest / "fixture") == {p: c for p, c in contents.items() if "Temp-GRU" not in p}


def test_clone_holding_the_commit_elsewhere_is_told_to_check_it_out(release, tmp_path, capsys):
    rel, contents = release
    clone, dest = tmp_path / "clone", tmp_path / "released"
    rel.commit = git_clone_of(clone, contents)
    git(clone, "rm", "-q", rel.model_path("Act", "Temp-GRU"))
    git(clone, "commit", "-q", "-m", "a later commit without one model")
    code, _, err = local_install(clone, dest, capsys)
    checkout = f"git -C {clone} checkout {rel.commit}"
    assert code == 1 and f"needs {fetch_models.REPOSITORY_URL} at commit {rel.commit} ({checkout})." in err
    assert run_command(checkout) == 0
    assert local_install(clone, dest, capsys)[0] == 0
    assert file_contents(dest / "fixture") == contents


@pytest.fixture
def other_release(release, monkeypatch):
    """A second fixture release (Temp-Trans, semi-supervised) at a commit of its own."""
    blobs = {(e, "Temp-Trans"): git_blob_id(e.encode()) for e in EMOTIONS}
    rel = Release("fixture-ssl", "fedcba9876543210fedcba9876543210fedcba98", blobs,
                  clusters={e: 10 for e in EMOTIONS}, unlabel={e: 500 for e in EMOTIONS})
    monkeypatch.setitem(RELEASES, "fixture-ssl", rel)
    return rel


def test_clone_without_the_commit_names_the_release_it_does_hold(release, other_release, tmp_path, capsys):
    """A clone holding one release's commit, asked for another release: no checkout is advised
    (the commit is not in its history); the command that installs what it holds is named, and works."""
    rel, contents = release
    clone, dest = tmp_path / "clone", tmp_path / "released"
    rel.commit = git_clone_of(clone, contents)
    ssl = other_release.commit
    code, err = cli_exit(["fixture-ssl", "--from", str(clone), "--dest", str(dest)], capsys)
    assert code == 1 and f"git -C {clone} checkout" not in err
    offered = f".venv/bin/python fetch_models.py fixture -mt Temp-Trans --dest {dest} --from {clone}"
    assert err == (f"error: 3 of the 6 file(s) to install are missing or differ in {clone} (3 missing, "
                   f"0 differ; listed above): fixture-ssl needs {fetch_models.REPOSITORY_URL} at commit "
                   f"{ssl}, which the clone {clone} does not hold (not in its history: no checkout there "
                   f"gives these files; fetch the commit where GitHub is reachable, git -C {clone} fetch "
                   f"origin {ssl}, or unpack {fetch_models.REPOSITORY_URL}/archive/{ssl}.zip and give "
                   f"--from that folder). Nothing was installed. It holds fixture's Temp-Trans models "
                   f"(another release, at commit {rel.commit[:7]}) complete; install them with: {offered}\n")
    assert run_command(offered) == 0
    assert file_contents(dest / "fixture") == {p: c for p, c in contents.items() if "Temp-GRU" not in p}

    # An unpacked archive holding only the other release's Temp-GRU models: the type asked for
    # (Temp-Trans) is not complete there, so the type it does hold is offered.
    archive = tmp_path / "archive"
    write_local_copy(archive, {p: c for p, c in contents.items() if "Temp-Trans" not in p})
    code, err = cli_exit(["fixture-ssl", "--from", str(archive), "--dest", str(dest)], capsys)
    assert code == 1 and err.endswith(
        f"It holds fixture's Temp-GRU models (another release, at commit {rel.commit[:7]}) complete; "
        f"install them with: .venv/bin/python fetch_models.py fixture -mt Temp-GRU --dest {dest} "
        f"--from {archive}\n")


def test_check_release(tmp_path, monkeypatch):
    root = str(tmp_path)
    hint = ".venv/bin/python fetch_models.py v1.8 -mt Temp-CNN --dest " + root
    with pytest.raises(UserError, match=re.escape(hint)):
        check_release("v1.8", "Temp-CNN", root)
    monkeypatch.chdir(tmp_path)
    commit = RELEASES["v1.8"].commit
    with pytest.raises(UserError) as err:
        check_release("v1.8", "Temp-CNN")
    # Both routes: the download, and --from a local copy at the commit named in full.
    assert str(err.value).endswith(
        "Fetch it with: .venv/bin/python fetch_models.py v1.8 -mt Temp-CNN; or, without network "
        f"access to GitHub, install from a local copy of {fetch_models.REPOSITORY_URL} "
        f"at commit {commit} (a clone checked out there, or its archive "
        f"{fetch_models.REPOSITORY_URL}/archive/{commit}.zip unpacked): "
        ".venv/bin/python fetch_models.py v1.8 -mt Temp-CNN --from DIR")
    ssl = RELEASES["v1.8-ssl"].commit
    with pytest.raises(UserError, match=r"Fetch it with: \.venv/bin/python fetch_models.py v1.8-ssl "
                                        rf"--dest {re.escape(root)};.* at commit {ssl} .*: \.venv/bin/python "
                                        rf"fetch_models.py v1.8-ssl --dest {re.escape(root)} --from DIR$"):
        check_release("v1.8-ssl", "Temp-Trans", root)
    with pytest.raises(UserError, match="no Temp-GRU models"):
        check_release("v1.8-ssl", "Temp-GRU", root)
    for path in RELEASES["v1.8"].files("Temp-CNN"):
        os.makedirs(os.path.dirname(os.path.join(root, "v1.8", path)), exist_ok=True)
        open(os.path.join(root, "v1.8", path), "wb").close()
    assert check_release("v1.8", "Temp-CNN", root) is RELEASES["v1.8"]
    with pytest.raises(UserError, match="python fetch_models.py v1.8 -mt Temp-GRU"):
        check_release("v1.8", "Temp-GRU", root)


NORM_TERM_FILES = {f"NormTerm/{a}_norm_{s}.mat" for a in ("act", "dom", "val", "feat")
                   for s in ("means", "stds")}


def test_real_table_form():
    assert set(RELEASES) == {"v1.8", "v1.8-ssl"}
    assert RELEASES["v1.8"].commit == "daeb08605a2ae68c5160b3d9ea07cc5c64fc625f"
    assert RELEASES["v1.8-ssl"].commit == "bc0eaf7f910185d039b9424ac9e3be5232841141"
    prefix = "trained_models/TempDeepEmoCluster_epoch30_batch64_"
    v18 = RELEASES["v1.8"].files()
    assert set(v18) == NORM_TERM_FILES | {f"{prefix}10clusters_{e}_{mt}.pth.tar"
                                          for e in ("Act", "Dom", "Val") for mt in TEMPORAL_TYPES}
    assert len(v18) == 20
    ssl = RELEASES["v1.8-ssl"].files()
    assert set(ssl) == NORM_TERM_FILES | {
        f"{prefix}30clusters_Act_Temp-Trans_unlabel100000.pth.tar",
        f"{prefix}30clusters_Dom_Temp-Trans_unlabel100000.pth.tar",
        f"{prefix}10clusters_Val_Temp-Trans_unlabel15000.pth.tar"}
    assert RELEASES["v1.8-ssl"].temporal_types == ["Temp-Trans"]
    assert RELEASES["v1.8"].temporal_types == list(TEMPORAL_TYPES)
    assert len(RELEASES["v1.8"].files("Temp-Trans")) == 11
    for rel in RELEASES.values():
        for blob in rel.files().values():
            assert len(blob) == 40 and set(blob) <= set("0123456789abcdef")
        assert len(rel.commit) == 40 and set(rel.commit) <= set("0123456789abcdef")


def test_blob_id_matches_git(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    assert fetch_models.blob_id(str(path)) == "ce013625030ba8dba906f756967f9e9ca394464a"
