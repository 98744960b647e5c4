"""The package's shape: no import cycles, optional SDKs imported in one place, and the wheel
holds the product only (no benchmark, no fault proxy, no production use of a test double)."""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "pipekey"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import that runs: module level and inside functions, not under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            else:
                visit(child)

    visit(tree)
    return found


def _import_graph() -> dict[str, set[str]]:
    """pipekey module -> the pipekey modules it imports (lazily or not)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        deps: set[str] = set()

        def add(target: str, name: str = name, deps: set[str] = deps) -> None:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)

        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name)
                continue
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:  # `from . import x` imports the module x, not the package
                add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def _all_imports(source: str, package: str) -> set[str]:
    """The modules a module of ``package`` imports at any level, under TYPE_CHECKING too, as
    dotted names (``from x import y`` gives both ``x`` and ``x.y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[:len(parts) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def test_credentials_do_not_depend_on_the_client() -> None:
    """No module of pipekey.credentials imports pipekey.client, not even for typing: a minter
    sees the client as a MintContext (pipekey.credentials.base), so the client depends on
    credentials and never the other way round."""
    typing_only = "if TYPE_CHECKING:\n    from ..client import Pipekey\n"
    assert "pipekey.client" in _all_imports(typing_only, "pipekey.credentials")
    offenders = []
    for name, (path, is_package) in _modules().items():
        package = name if is_package else name.rpartition(".")[0]
        imported = _all_imports(path.read_text(encoding="utf-8"), package)
        if name.startswith("pipekey.credentials") and \
                imported & {"pipekey.client", "pipekey.Pipekey", "pipekey.load"}:
            offenders.append(name)
    assert offenders == []


def test_graph_sees_lazy_imports() -> None:
    """The import graph includes imports inside functions (a lazy import still makes a cycle),
    and finds a cycle made of them."""
    graph = _import_graph()
    assert "pipekey.converters" in graph["pipekey.connection"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    """No two pipekey modules import each other, directly or round a loop, at any level."""
    assert _cycles(_import_graph()) == []


# the import that brings in each optional SDK; only pipekey._sdk (and each integration, whose
# whole module is its SDK) may write it
SDK_ENTRIES = ("boto3", "hvac", "google.cloud.secretmanager", "google.cloud",
               "azure.identity", "azure.keyvault.secrets", "azure.keyvault")


def test_sdk_imports_in_one_place() -> None:
    """boto3, hvac, google-cloud-secret-manager and the Azure SDK are imported only in
    pipekey._sdk, which turns a missing SDK into the pip line of its extra."""
    offenders = []
    for name, (path, _) in _modules().items():
        if name == "pipekey._sdk":
            continue
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if not node.level else [])
            if isinstance(node, ast.ImportFrom) and node.module == "google.cloud":
                targets = [f"google.cloud.{a.name}" for a in node.names]
            offenders += [f"{name}:{node.lineno} {t}" for t in targets if t in SDK_ENTRIES]
    assert offenders == []


def test_package_holds_no_benchmark_or_proxy() -> None:
    """src/pipekey holds no peer benchmark, no fault proxy and no benchmark-only dependency;
    they live in benchmarks/, beside the package."""
    assert not list(PACKAGE.rglob("bench_compare*"))
    bench_only = {"matplotlib", "aws_secretsmanager_caching", "moto"}
    for name, (path, _) in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        assert "LoopbackProxy" not in classes, name
        for node in _runtime_imports(tree):
            roots = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if not node.level else [])
            assert not {r.split(".")[0] for r in roots} & bench_only, f"{name}:{node.lineno}"
            assert not any(r.startswith("http.server") for r in roots), f"{name}:{node.lineno}"
    root = SRC.parent
    assert (root / "benchmarks" / "compare.py").is_file()
    assert (root / "benchmarks" / "proxy.py").is_file()


def test_wheel_packages_are_pipekey_only() -> None:
    """The packages setuptools puts in the wheel (packages.find under src/) are pipekey's."""
    setuptools = pytest.importorskip("setuptools")
    packages = setuptools.find_packages(where=str(SRC))
    assert packages and all(p == "pipekey" or p.startswith("pipekey.") for p in packages)


def test_production_code_subclasses_no_test_double() -> None:
    """No class outside pipekey.testing derives from one of its doubles (copy's Airflow
    export view is a Backend of its own, not a MemoryBackend). Using a double as a simulated
    store, as `pipekey bench` does, is what they are public for."""
    import pipekey.testing

    doubles = set(pipekey.testing.__all__)
    offenders = []
    for name, (path, _) in _modules().items():
        if name == "pipekey.testing":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                         for b in node.bases}
                offenders += [f"{name}.{node.name}({b})" for b in bases & doubles]
    assert offenders == []


def test_testing_exports_the_doubles_only() -> None:
    """pipekey.testing keeps MemoryBackend (and its read-only form) and FailingBackend public;
    the proxy left it."""
    import pipekey.testing

    assert set(pipekey.testing.__all__) == {"Call", "FailingBackend", "MemoryBackend",
                                             "ReadOnlyMemoryBackend"}


@pytest.mark.slow
def test_bench_compare_without_a_checkout_says_so(tmp_path: Path) -> None:
    """From an installation with no benchmarks/ beside it, `bench --compare` exits 2 with one
    line saying it needs a source checkout."""
    shutil.copytree(PACKAGE, tmp_path / "src" / "pipekey",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    result = subprocess.run([sys.executable, "-m", "pipekey", "bench", "--compare"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "source checkout" in lines[0] and "benchmarks/compare.py" in lines[0]


def _string_literals(tree: ast.AST) -> list[ast.Constant]:
    """The string constants of a module, f-string parts included, docstrings left out."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("home, rule, needle", [
    pytest.param("pipekey.keys", "SEGMENT_PATTERN", lambda rule: rule.strip("[]+"),
                 id="key-segment-rule"),
    pytest.param("pipekey.keys", "NAME_PATTERN", lambda rule: rule, id="name-rule"),
    pytest.param("pipekey.childenv", "NOT_IN_VARIABLE", lambda rule: rule.pattern,
                 id="variable-name-rule"),
    pytest.param("pipekey.childenv", "CONNECTION_PREFIX", lambda rule: rule,
                 id="connection-variable-prefix"),
    pytest.param("pipekey.keys", "NOT_AN_ENVIRONMENT", lambda rule: rule.split("}")[1][:30],
                 id="not-an-environment-message"),
    # the text before its first field ("no pipeline "), as an f-string's literal part ends
    pytest.param("pipekey.policy", "NO_SUCH_PIPELINE", lambda rule: "\0" + rule.split("{")[0],
                 id="no-pipeline-message"),
    pytest.param("pipekey.policy", "NO_SUCH_PARAMETER", lambda rule: rule.split("}")[1][:18],
                 id="unknown-parameter-message"),
    pytest.param("pipekey.redact", "MASK", lambda rule: rule, id="mask"),
])
def test_one_definition(home: str, rule: str, needle: Callable[[Any], str]) -> None:
    """Each rule is written once, in its home, and imported from there: the key-segment rule
    (pipekey.keys.SEGMENT_PATTERN), the manifest's name rule (pipekey.keys.NAME_PATTERN: a
    pipeline's, a backend's), the environment-variable name rule and a connection variable's
    prefix (pipekey.childenv), why a text is no environment name (pipekey.keys), the
    "no pipeline" and "no parameter" messages (pipekey.policy) and the mask (pipekey.redact):
    no other module spells them out."""
    text = needle(getattr(importlib.import_module(home), rule))
    ends = text.startswith("\0")  # "\0...": a literal ending with the text
    text = text.lstrip("\0")
    assert len(text) >= 3
    offenders = []
    for name, (path, _) in _modules().items():
        if name == home:
            continue
        for node in _string_literals(ast.parse(path.read_text(encoding="utf-8"))):
            if node.value.endswith(text) if ends else text in node.value:
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_one_environment_choice(tmp_path: Path) -> None:
    """A run and the Airflow backend choose a pipeline's environment by one rule
    (``Pipekey.environment_for``): the pipeline's own env unless the process chose one."""
    import pipekey

    config = tmp_path / "pipekey.toml"
    config.write_text('env = "dev"\n[pipelines.p]\nscope = "p"\nenv = "prod"\n')
    lk = pipekey.load(config)
    try:
        assert lk.environment_for(lk.pipeline_config("p")) == "prod"
        assert lk.environment_for(lk.pipeline_config("p"), "dev") == "dev"
    finally:
        lk.close()


def test_one_mask_everywhere() -> None:
    """A Secret, a Connection and `pipekey get` show a value as the log masker does."""
    from datetime import datetime

    from pipekey import Connection
    from pipekey.backends.base import Secret
    from pipekey.redact import MASK

    secret = Secret(key="k", value="fake-value", backend="b", path="p", version="1",
                    created_at=datetime(2026, 1, 1))
    assert f"value={MASK!r}" in repr(secret)
    conn = Connection(conn_type="postgres", host="https://u:fake-pw@h", password="fake-pw")
    assert f"password={MASK!r}" in repr(conn) and f"https://{MASK}@h" in repr(conn)


#: the public client's ``Pipekey.list`` (``lk.list``, behind ``pipekey ls``) keeps its name;
#: the annotations below it in the class spell the builtin ``builtins.list``
BUILTIN_NAMES_KEPT = {"pipekey.client.Pipekey.list"}


def test_no_class_body_shadows_type_or_list() -> None:
    """No class in src/pipekey binds ``type`` (a class attribute) or defines a method named
    ``list``: backends say ``kind`` and ``list_keys``. Pydantic fields mirroring the
    manifest's ``type`` are annotations only and bind no name in the class body."""
    offenders = []
    for name, (path, _) in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    bound = [item.name] if item.name == "list" else []
                elif isinstance(item, ast.Assign):
                    bound = [t.id for t in item.targets
                             if isinstance(t, ast.Name) and t.id in ("type", "list")]
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    bound = [item.target.id] if (item.target.id in ("type", "list")
                                                 and item.value is not None) else []
                else:
                    bound = []
                offenders += [f"{name}.{node.name}.{b}" for b in bound]
    assert sorted(set(offenders) - BUILTIN_NAMES_KEPT) == []


#: every ``getattr`` of src/pipekey, by (module, first argument): none asks a backend what it
#: can do (capabilities are protocols checked with ``isinstance``; see pipekey.backends.base)
GETATTR_ALLOWED = {
    # optional fields of third-party exceptions, read to word pipekey's one-line error
    ("pipekey.credentials.postgres", "exc"), ("pipekey.credentials.postgres", "diag"),
    ("pipekey.credentials.vault_database", "exc"), ("pipekey.probes", "exc"),
    ("pipekey.backends.azure_key_vault", "exc"), ("pipekey.backends.files", "exc"),
    ("pipekey.backends.azure_key_vault", "getattr(exc, 'error', None)"),
    ("pipekey.backends.aws_errors", "exc"), ("pipekey.backends.gcp_secret_manager", "exc"),
    ("pipekey.cli._common", "error"), ("pipekey.backends.vault_client", "response"),
    # lazy imports: a name of a module loaded on first use
    ("pipekey", "importlib.import_module(f'.{module}', __name__)"),
    ("pipekey.backends", "module"), ("pipekey.credentials", "module"),
    # an SDK client's operation named by the caller (boto3, GCP), and a thread-local slot
    ("pipekey.backends.aws_common", "self.client_for(service or self.service)"),
    ("pipekey.backends.gcp_secret_manager", "self.client"),
    ("pipekey.backends.vault_client", "self._local"),
    # a Connection's own dataclass fields, by name
    ("pipekey.connection", "self"),
    # objects of other libraries: click parameters and commands, a text stream's buffer,
    # sys.stdout/stderr, Airflow's task instance, an HTTP request in an SDK log record, the
    # logging filter installed before
    ("pipekey.cli._common", "p"), ("pipekey.cli._common", "command"),
    ("pipekey.cli.run", "target"), ("pipekey.integrations._airflow_masking", "self._stream"),
    ("pipekey.integrations._airflow_masking", "sys"), ("pipekey.integrations._airflow_tasks", "ti"),
    ("pipekey.redact", "request"), ("pipekey.redact", "previous"),
}


def test_no_capability_is_probed_by_name() -> None:
    """src/pipekey calls no ``hasattr``, and ``getattr`` only where GETATTR_ALLOWED says why
    (never on a backend): a capability is a protocol in pipekey.backends.base, asked with
    ``isinstance``, which a cache answers as its backend does."""
    offenders = []
    for name, (path, _) in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id == "hasattr":
                offenders.append(f"{name}:{node.lineno} hasattr")
            elif node.func.id == "getattr" and node.args:
                first = ast.unparse(node.args[0])
                if (name, first) not in GETATTR_ALLOWED:
                    offenders.append(f"{name}:{node.lineno} getattr({first})")
    assert offenders == []


def test_no_backend_class_is_chosen_at_run_time() -> None:
    """No class of src/pipekey defines ``__new__`` (a constructor returning another class
    hides capabilities from its type) or calls three-argument ``type()``."""
    offenders = []
    for name, (path, _) in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == "__new__":
                offenders.append(f"{name}:{node.lineno} __new__")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id == "type" and len(node.args) == 3):
                offenders.append(f"{name}:{node.lineno} type()")
    assert offenders == []


#: no module of src/pipekey is longer than this; new code goes in new, well-named modules
MAX_MODULE_LINES = 500
#: the Run class (pipekey.run) holds a run's lifecycle and reads, no more
MAX_RUN_LINES = 350


def _oversized(limit: int) -> dict[str, int]:
    """Module -> its line count, for every module of the package longer than ``limit``."""
    counts = {name: len(path.read_text(encoding="utf-8").splitlines())
              for name, (path, _) in _modules().items()}
    return {name: n for name, n in counts.items() if n > limit}


def _class_lines(module: str, cls: str) -> int:
    """How many lines class ``cls`` of ``module`` spans, decorators included (by ast)."""
    path, _ = _modules()[module]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            assert node.end_lineno is not None
            return node.end_lineno - first + 1
    raise AssertionError(f"no class {cls} in {module}")


def test_no_module_is_over_the_size_limit() -> None:
    """Every module of src/pipekey is at most MAX_MODULE_LINES lines: split a growing module
    along its seams (as cache, run, integrations.airflow, backends.local and backends.vault
    were) rather than letting it grow."""
    assert _oversized(MAX_MODULE_LINES) == {}
    assert _oversized(100), "the measure sees the modules"  # it can fail


def test_run_class_holds_lifecycle_and_reads_only() -> None:
    """class Run spans at most MAX_RUN_LINES lines; its other concerns live in run_audit,
    run_connections, run_refresh and announce."""
    lines = _class_lines("pipekey.run", "Run")
    assert 100 < lines <= MAX_RUN_LINES, f"class Run spans {lines} lines"
