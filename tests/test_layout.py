"""The tests' own layout: test modules share helpers through tests/support/ and fixtures through
conftest.py, never by importing one another; what the tests run lives in tests/support/."""
import ast
import os

from support import ROOT

TESTS = os.path.join(ROOT, "tests")
SUPPORT = os.path.join(TESTS, "support")
CACHES = {"__pycache__", ".pytest_cache"}


def python_files():
    """Every .py file under tests/."""
    found = []
    for folder, dirs, names in os.walk(TESTS):
        dirs[:] = [d for d in dirs if d not in CACHES]
        found += [os.path.join(folder, n) for n in names if n.endswith(".py")]
    return sorted(found)


def imported_modules(path):
    """The modules a file imports: import statements anywhere in it (functions included), what
    `from M import N` names (N may be a module), and importlib.import_module or __import__ of a
    literal name."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names += [node.module] if node.module else []
            names += [".".join(filter(None, [node.module, alias.name])) for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            names.append(node.args[0].value)
    return names


def is_test_module(name):
    """A test module or conftest.py, as an import names it."""
    last = name.split(".")[-1]
    return last.startswith("test_") or last == "conftest"


def test_no_file_under_tests_imports_a_test_module_or_conftest():
    files = python_files()
    assert os.path.join(TESTS, "test_layout.py") in files and os.path.join(SUPPORT, "cli.py") in files
    offenders = {os.path.relpath(path, TESTS): [n for n in imported_modules(path) if is_test_module(n)]
                 for path in files}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_import_finder_sees_each_way_of_importing_a_test_module(tmp_path):
    """(A finder that found nothing would pass the test above as well.)"""
    source = tmp_path / "test_x.py"
    source.write_text("import test_a\nfrom test_b import f\nfrom conftest import ROOT\n"
                      "from support import test_c\nfrom . import test_d\n"
                      "def g():\n    import importlib\n"
                      "    return importlib.import_module('test_e'), __import__('test_f')\n")
    found = {n for n in imported_modules(str(source)) if is_test_module(n)}
    assert found == {"test_a", "test_b", "conftest", "support.test_c", "test_d", "test_e", "test_f"}


def test_test_modules_sit_in_tests_and_everything_else_in_support():
    top = sorted(n for n in os.listdir(TESTS) if n not in CACHES)
    assert [n for n in top if not (n == "conftest.py" or n == "support"
                                   or (n.startswith("test_") and n.endswith(".py")))] == []
    assert os.path.isfile(os.path.join(SUPPORT, "__init__.py"))
    assert not [n for n in os.listdir(SUPPORT) if n.startswith("test_")]
    for driver in ("distributed_driver.py", "full_disk.py", "slurm_cluster.sh"):
        assert os.path.isfile(os.path.join(SUPPORT, driver)), driver


def test_conftest_holds_fixtures_only():
    """Helpers are imported from tests/support/; conftest.py defines pytest's fixtures (and
    would define its hooks, pytest_*)."""
    with open(os.path.join(TESTS, "conftest.py")) as f:
        tree = ast.parse(f.read())
    defined = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert defined
    assert [node.name for node in defined if not node.name.startswith("pytest_")
            and not any("fixture" in ast.unparse(d) for d in node.decorator_list)] == []
