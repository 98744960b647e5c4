"""Run contexts: prefetch, the walk, policy, isolation, lifecycle, environments."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import pipekey
from pipekey import AccessDenied, MissingSecrets, RunClosed, SecretNotFound, UsageError
from pipekey.manifest import parse_manifest
from pipekey.testing import Call, FailingBackend, MemoryBackend

PIPELINES = {
    "ads": {"scope": "marketing/facebook/{account}", "requires": ["access_token", "app_secret"],
            "optional": ["region"], "grants": ["finance/reports"],
            "connections": {"warehouse": "connections/wh_{env}"},
            "env_vars": {"app_secret": "FB_APP_SECRET"}},
    "pinned": {"scope": "ops", "requires": ["pager"], "env": "prod"},
}
DATA = {
    "marketing/facebook/acct_42/access_token": "fake-tok-42",
    "marketing/facebook/acct_43/access_token": "fake-tok-43",
    "marketing/facebook/app_secret": "fake-app",
    "connections/wh_dev": "postgres://loader:fake-wh-pw@wh.internal:5432/dev",
    "finance/reports/key": "fake-fin",
    "shared/slack": "fake-slack",
    "ops/pager": "fake-pager",
}


def make(*backends, pipelines=PIPELINES, env=None, lookup="sequential") -> pipekey.Pipekey:
    manifest = parse_manifest({"pipelines": pipelines, "lookup": lookup},
                              Path("pipekey.toml"), env)
    return pipekey.Pipekey(list(backends) or [MemoryBackend("mem", DATA)], manifest=manifest,
                             env=manifest.env)


def test_prefetch_is_one_batched_call_per_backend_per_level() -> None:
    """Each round asks each backend once, for the names still unresolved at that level."""
    a, b = MemoryBackend("a"), MemoryBackend("b", DATA)
    with make(a, b).pipeline("ads", account="acct_42") as run:
        assert run.secret("access_token") == "fake-tok-42"
        assert run.secret("app_secret") == "fake-app"
        assert run.get("connections/wh_dev").startswith("postgres://")
    assert a.calls == b.calls  # both asked the same, in the same rounds
    assert [c.args for c in b.calls] == [
        ("marketing/facebook/acct_42/access_token", "marketing/facebook/acct_42/app_secret",
         "marketing/facebook/acct_42/region", "connections/wh_dev"),
        ("marketing/facebook/app_secret", "marketing/facebook/region"),
        ("marketing/region",),
        ("shared/region",),
    ]


def test_secrets_at_scope_level_are_ready_in_one_round() -> None:
    """40 names all at the scope level: one get_many per backend, holding just those 40."""
    names = [f"s{i:02d}" for i in range(40)]
    data = {f"bench/a1/{n}": f"fake-{n}" for n in names}
    mem = MemoryBackend("mem", data)
    lk = make(mem, pipelines={"p": {"scope": "bench/{account}", "requires": names}})
    with lk.pipeline("p", account="a1") as run:
        assert run.secret("s39") == "fake-s39"
    assert len(mem.calls) == 1 and len(mem.calls[0].args) == 40


def test_backends_are_asked_in_parallel() -> None:
    """With lookup = "parallel", both backends are inside get_many at the same time during
    the prefetch."""
    barrier = threading.Barrier(2, timeout=10)

    class Meeting(MemoryBackend):
        def _get_many(self, keys):
            barrier.wait()  # raises BrokenBarrierError if the other backend never arrives
            return super()._get_many(keys)

    lk = make(Meeting("a"), Meeting("b", DATA), lookup="parallel")
    with lk.pipeline("ads", account="acct_42") as run:
        assert run.secret("access_token") == "fake-tok-42"


def test_warm_reads_make_no_call() -> None:
    """Reads of prefetched secrets are served from the run without touching a backend."""
    mem = MemoryBackend("mem", DATA)
    with make(mem).pipeline("ads", account="acct_42") as run:
        after_open = len(mem.calls)
        for _ in range(1000):
            run.secret("access_token")
            run.get("marketing/facebook/acct_42/access_token")
            run.connection("warehouse")
    assert len(mem.calls) == after_open


def test_most_specific_level_beats_chain_order() -> None:
    """A key at the scope level in a later backend wins over shared/ in an earlier one."""
    first = MemoryBackend("first", {"shared/access_token": "fake-shared",
                                    "marketing/facebook/app_secret": "fake-app",
                                    "connections/wh_dev": "postgres://h"})
    second = MemoryBackend("second", {"marketing/facebook/acct_42/access_token": "fake-own"})
    with make(first, second).pipeline("ads", account="acct_42") as run:
        assert run.secret("access_token") == "fake-own"
        assert run.explain("access_token").attempts[0].level == "marketing/facebook/acct_42"


def test_missing_requirements_are_listed_together() -> None:
    """One MissingSecrets names every missing secret and connection, with each place looked."""
    mem = MemoryBackend("mem", {"marketing/facebook/acct_42/access_token": "fake"})
    with pytest.raises(MissingSecrets) as info:
        make(mem).pipeline("ads", account="acct_42").open()
    err = info.value
    assert set(err.missing) == {"app_secret", "connection:warehouse"}
    assert [a.level for a in err.missing["app_secret"]] == [
        "marketing/facebook/acct_42", "marketing/facebook", "marketing", "shared"]
    assert "'app_secret' (tried: mem memory:marketing/facebook/acct_42/app_secret " \
           "[marketing/facebook/acct_42] -> absent" in str(err)
    assert isinstance(err, SecretNotFound) and "fake" not in str(err)


def test_a_failing_backend_stops_the_walk_instead_of_falling_to_shared() -> None:
    """A store failure at the scope level is raised, not answered from a less specific level."""
    down = FailingBackend("down")
    up = MemoryBackend("up", {**DATA, "shared/access_token": "fake-shared-wrong"})
    del_key = "marketing/facebook/acct_42/access_token"
    up.delete(del_key)
    with pytest.raises(pipekey.BackendUnavailable) as info:
        make(down, up).pipeline("ads", account="acct_42").open()
    assert "down" in str(info.value) and "fake" not in str(info.value)


def test_a_failing_backend_falls_through_within_a_level() -> None:
    """The same key in a later backend still answers when an earlier backend failed."""
    up = MemoryBackend("up", {**DATA, "marketing/facebook/acct_42/app_secret": "fake-own-app"})
    with make(FailingBackend("down"), up).pipeline("ads", account="acct_42") as run:
        assert run.secret("access_token") == "fake-tok-42"
        outcomes = [a.outcome for a in run.explain("access_token").attempts]
        assert outcomes == ["error", "found"]


def test_policy_denies_other_scopes() -> None:
    """run.get allows its scope walk, shared/, grants and mapped keys; denies the rest."""
    with make().pipeline("ads", account="acct_42") as run:
        assert run.get("shared/slack") == "fake-slack"
        assert run.get("finance/reports/key") == "fake-fin"
        with pytest.raises(AccessDenied, match="acct_43"):
            run.get("marketing/facebook/acct_43/access_token")
        with pytest.raises(AccessDenied):
            run.get("ops/pager")


def test_lazy_names_are_resolved_once_and_missing_ones_list_the_walk() -> None:
    """A name outside requires is resolved on first use and cached; a miss lists its walk."""
    mem = MemoryBackend("mem", {**DATA, "marketing/facebook/acct_42/extra": "fake-extra"})
    with make(mem).pipeline("ads", account="acct_42") as run:
        after_open = len(mem.calls)
        assert run.secret("extra") == "fake-extra"
        assert run.secret("extra") == "fake-extra"
        assert [c.args for c in mem.calls[after_open:]] == [("marketing/facebook/acct_42/extra",)]
        with pytest.raises(SecretNotFound) as info:
            run.secret("nope")
        assert [a.level for a in info.value.attempts][-1] == "shared"


def test_undeclared_names_are_not_read_at_parent_levels() -> None:
    """run.secret of an undeclared name walks the scope and shared/ only; run.get of an
    undeclared key at a parent level (a sibling's scope, say) is denied."""
    mem = MemoryBackend("mem", {**DATA, "marketing/extra": "fake-parent-extra",
                                "marketing/facebook/acct_43": '{"access_token": "fake-tok-43"}'})
    with make(mem).pipeline("ads", account="acct_42") as run:
        with pytest.raises(SecretNotFound) as info:
            run.secret("extra")
        assert [a.key for a in info.value.attempts] == ["marketing/facebook/acct_42/extra",
                                                        "shared/extra"]
        with pytest.raises(SecretNotFound):
            run.secret("acct_43")
        for key in ("marketing/extra", "marketing/facebook/acct_43"):
            with pytest.raises(AccessDenied, match=key):
                run.get(key)
        assert run.get("marketing/facebook/app_secret") == "fake-app"  # a declared name
        assert "fake-tok-43" not in [v for k, v in run._by_key.items()]


def test_a_parameter_equal_to_a_declared_name_is_refused() -> None:
    """account="app_secret" would make the run's subtree the key its siblings read as
    app_secret: the run is refused, naming the segment."""
    with pytest.raises(UsageError, match="'app_secret' is also a declared name"):
        make().pipeline("ads", account="app_secret")


def test_values_are_dropped_on_exit() -> None:
    """After the block, reads raise RunClosed and the run holds nothing."""
    with make().pipeline("ads", account="acct_42") as run:
        run.secret("access_token")
    with pytest.raises(RunClosed):
        run.secret("access_token")
    with pytest.raises(RunClosed):
        run.get("shared/slack")
    assert run.names == [] and "closed" in repr(run)


def test_repr_shows_no_value() -> None:
    """A run's repr names the pipeline, run and scope, never a value."""
    with make().pipeline("ads", account="acct_42", run_name="manual__2026") as run:
        text = repr(run)
    assert "manual__2026" in text and "marketing/facebook/acct_42" in text
    assert "fake" not in text


def test_current_is_per_thread_task_and_nested() -> None:
    """current() is the innermost open run; other threads see none; nesting restores."""
    lk = make()
    assert pipekey.current() is None
    with lk.pipeline("ads", account="acct_42") as outer:
        assert pipekey.current() is outer
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(pipekey.current).result() is None
            assert pool.submit(lambda: outer.attach().__enter__() is outer).result()
        with lk.pipeline("ads", account="acct_43") as inner:
            assert pipekey.current() is inner
            assert inner.secret("access_token") == "fake-tok-43"
        assert pipekey.current() is outer
    assert pipekey.current() is None


def test_asyncio_tasks_each_see_their_own_run() -> None:
    """Concurrent `async with` runs in one event loop never see each other."""
    lk = make()

    async def one(account: str) -> list[str]:
        seen = []
        async with lk.pipeline("ads", account=account) as run:
            for _ in range(50):
                await asyncio.sleep(0)
                seen.append(pipekey.current().secret("access_token"))
                assert pipekey.current() is run
        return seen

    async def main():
        return await asyncio.gather(one("acct_42"), one("acct_43"))

    a, b = asyncio.run(main())
    assert set(a) == {"fake-tok-42"} and set(b) == {"fake-tok-43"}


def test_parameters_are_checked() -> None:
    """Unknown, missing and malformed parameters, and unknown pipelines, are usage errors."""
    lk = make()
    with pytest.raises(UsageError, match="no parameter 'acount'"):
        lk.pipeline("ads", acount="acct_42")
    with pytest.raises(UsageError, match="needs parameter 'account'"):
        lk.pipeline("ads")
    with pytest.raises(UsageError, match="not a valid key segment"):
        lk.pipeline("ads", account="../acct_43")
    with pytest.raises(UsageError, match="no pipeline 'nope'"):
        lk.pipeline("nope")


def test_run_names_are_independent_of_scope() -> None:
    """100 runs with unique names share one definition and one scope."""
    lk = make()
    runs = [lk.pipeline("ads", account="acct_42", run_name=f"scheduled__{i}") for i in range(100)]
    assert len({r.name for r in runs}) == 100
    assert {r.scope.prefix for r in runs} == {"marketing/facebook/acct_42"}


def test_child_env_mapping_and_parent_untouched() -> None:
    """run.env() maps names to variables (env_vars, else UPPER_SNAKE); os.environ is unchanged."""
    before = dict(os.environ)
    with make().pipeline("ads", account="acct_42") as run:
        assert run.env() == {"ACCESS_TOKEN": "fake-tok-42", "FB_APP_SECRET": "fake-app",
                             "AIRFLOW_CONN_WAREHOUSE": DATA["connections/wh_dev"]}
    assert dict(os.environ) == before


def test_environment_precedence(monkeypatch) -> None:
    """An explicit env beats a pipeline's env, which beats the manifest default."""
    prod = MemoryBackend("mem", {"ops/pager": "fake-pager"})
    lk = make(prod)
    assert lk.pipeline("pinned").environment == "prod"
    assert lk.pipeline("pinned", env="dev").environment == "dev"
    assert lk.pipeline("ads", account="a").environment == "dev"
    monkeypatch.setenv("PIPEKEY_ENV", "staging")
    assert make(prod).pipeline("pinned").environment == "staging"


def test_environment_selects_backend_paths(isolated: Path, master_key: str) -> None:
    """{env} in a backend path picks another store per run; nothing is renamed."""
    (isolated / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\npath = "{env}.db"\n'
        '[pipelines.ads]\nscope = "ads/{account}"\nrequires = ["token"]\n')
    lk = pipekey.load()
    lk.chain_for("dev").backends[0].put("ads/a1/token", "fake-dev")
    lk.chain_for("prod").backends[0].put("ads/a1/token", "fake-prod")
    with lk.pipeline("ads", account="a1") as dev_run, \
            lk.pipeline("ads", account="a1", env="prod") as prod_run:
        assert (dev_run.secret("token"), prod_run.secret("token")) == ("fake-dev", "fake-prod")
    assert {p.name for p in isolated.glob("*.db")} == {"dev.db", "prod.db"}


def test_manifest_rejects_names_with_slashes(isolated: Path) -> None:
    """requires entries are names (one segment); the error names the field."""
    with pytest.raises(pipekey.ManifestError, match=r"pipelines.ads.requires\[0\]"):
        parse_manifest({"pipelines": {"ads": {"scope": "a", "requires": ["x/y"]}}},
                       Path("pipekey.toml"))


def test_open_twice_is_refused() -> None:
    """A run is opened once."""
    run = make().pipeline("ads", account="acct_42")
    run.open()
    with pytest.raises(UsageError, match="already opened"):
        run.open()
    run.close()


def test_calls_record_is_public_api() -> None:
    """MemoryBackend.calls records the prefetch as a Call."""
    mem = MemoryBackend("mem", DATA)
    make(mem).pipeline("pinned").open().close()
    assert mem.calls == [Call("get_many", ("ops/pager",))]


def test_connection_by_name_per_environment() -> None:
    """run.connection(name) parses the mapped key; another env maps another key."""
    mem = MemoryBackend("mem", {**DATA, "connections/wh_prod": "postgres://u:fake-prod@prod-db/p"})
    lk = make(mem)
    with lk.pipeline("ads", account="acct_42") as dev, \
            lk.pipeline("ads", account="acct_42", env="prod") as prod:
        assert dev.connection("warehouse").host == "wh.internal"
        assert prod.connection("warehouse").host == "prod-db"
        assert dev.connection("warehouse") is dev.connection("warehouse")  # parsed once
        with pytest.raises(UsageError, match="no connection 'lake'"):
            dev.connection("lake")
    with pytest.raises(RunClosed):
        dev.connection("warehouse")


def test_invalid_connection_names_it_without_the_value() -> None:
    """A stored connection that does not parse raises InvalidConnection naming it."""
    mem = MemoryBackend("mem", {**DATA, "connections/wh_dev": "postgres://u:fake-bad-pw@h:99999/d"})
    with make(mem).pipeline("ads", account="acct_42") as run:
        with pytest.raises(pipekey.InvalidConnection) as info:
            run.connection("warehouse")
    assert "connection 'warehouse'" in str(info.value) and "fake-bad-pw" not in str(info.value)


def test_declared_shared_names_skip_the_walk() -> None:
    """Names under `shared` are read straight from shared/, in the first round."""
    mem = MemoryBackend("mem", {"team/a1/token": "fake-t", "shared/slack": "fake-slack"})
    lk = make(mem, pipelines={"p": {"scope": "team/{account}", "requires": ["token"],
                                    "shared": ["slack"]}})
    with lk.pipeline("p", account="a1") as run:
        assert run.secret("slack") == "fake-slack"
    assert [c.args for c in mem.calls] == [("team/a1/token", "shared/slack")]


# -- environments: names, the manifest's list, bounded state ---------------------------------
FOLD_MANIFEST = '''env = "prod"
chain = ["env"]
[backends.env]
type = "env"
prefix = "LK_{env}__"
[pipelines.p]
scope = "{area}"
requires = ["api_key"]
'''


def test_an_environment_name_never_reads_another_environments_key(
        isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With prefix LK_{env}__, environment prod__FINANCE would read prod's
    finance/ledger/api_key as its own ledger/api_key: it is refused, naming it and the
    backend, and no value is read."""
    (isolated / "pipekey.toml").write_text(FOLD_MANIFEST)
    monkeypatch.setenv("LK_prod__FINANCE__LEDGER__API_KEY", "fake-prod-finance-key")
    lk = pipekey.load()
    for env in ("prod__FINANCE", "prod__finance", "PROD", "prod_"):
        with pytest.raises(UsageError) as info:
            lk.pipeline("p", env=env, area="ledger").__enter__()
        message = str(info.value)
        assert message.startswith(f"environment {env!r} cannot be used with backend 'env': ")
        assert "\n" not in message and "fake-" not in message
    with pytest.raises(UsageError, match="environment 'prod__FINANCE' cannot be used"):
        pipekey.load(env="prod__FINANCE")
    monkeypatch.setenv("LK_prod__LEDGER__API_KEY", "fake-prod-ledger-key")
    with lk.pipeline("p", env="prod", area="ledger") as run:
        assert run.secret("api_key") == "fake-prod-ledger-key"


@pytest.mark.parametrize("env", ["../etc", "a/b", "", "."])
def test_an_environment_is_one_key_segment_at_every_entry(
        isolated: Path, master_key: str, monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    """An environment name follows the key-segment rule through the library's env=,
    chain_for, load(env=) and $PIPEKEY_ENV: nothing is built from it."""
    (isolated / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\npath = "stores/{env}.db"\n'
        '[pipelines.ads]\nscope = "ads"\nrequires = ["token"]\n')
    lk = pipekey.load()
    if env:  # "" means "the default" for env=
        with pytest.raises(UsageError, match="environment is not a valid environment name"):
            lk.pipeline("ads", env=env).__enter__()
        with pytest.raises(UsageError, match="environment is not a valid environment name"):
            lk.chain_for(env)
        with pytest.raises(UsageError, match="is not a valid environment name"):
            pipekey.load(env=env)
        monkeypatch.setenv("PIPEKEY_ENV", env)
        with pytest.raises(UsageError, match="is not a valid environment name"):
            pipekey.load()
    assert not (isolated.parent / "etc.db").exists()
    assert {p.name for p in (isolated / "stores").glob("*")} <= {"dev.db"}


def test_only_the_manifests_environments_are_served(isolated: Path, master_key: str) -> None:
    """With environments listed, another name is refused with one line naming it and the
    list, from load(env=), pipeline(env=) and chain_for; a listed name a backend cannot map,
    an invalid one, or a pipeline pinned outside the list is a manifest error."""
    base = ('env = "dev"\nenvironments = ["dev", "prod"]\n'
            '[backends.local]\ntype = "local"\npath = "{env}.db"\n'
            '[pipelines.ads]\nscope = "ads"\nrequires = ["token"]\n')
    (isolated / "pipekey.toml").write_text(base)
    lk = pipekey.load()
    for refuse in (lambda: lk.pipeline("ads", env="staging").__enter__(),
                   lambda: lk.chain_for("staging")):
        with pytest.raises(UsageError) as info:
            refuse()
        assert str(info.value).startswith("environment 'staging' is not one of the "
                                          "environments ['dev', 'prod']")
    with pytest.raises(UsageError, match=r"environment 'staging' \(from --env\) is "
                                         r"not one of environments \['dev', 'prod'\]"):
        pipekey.load(env="staging")
    for text, field in [
        (base.replace('"prod"]', '"prod", "a/b"]'), "environments[2]"),
        (base.replace('"prod"]', '"prod"]\nchain = ["local", "env"]\n[backends.env]\n'
                      'type = "env"\nprefix = "LK_{env}__"') .replace('"prod"', '"Prod"'),
         "environments[1]"),
        (base + 'env = "staging"\n', "pipelines.ads.env"),
    ]:
        (isolated / "pipekey.toml").write_text(text)
        with pytest.raises(pipekey.ManifestError) as info:
            pipekey.load(env="dev")
        assert f": {field}: " in str(info.value)


def test_many_environments_keep_bounded_chains_and_caches_and_close_frees_them(
        isolated: Path, master_key: str) -> None:
    """Runs in 40 environment names leave at most MAX_ENVIRONMENTS other chains (and their
    caches) alive, not 40; close() drops them and releases every cache it held."""
    import gc

    from pipekey.cache import CachedBackend
    from pipekey.chain import Chain
    from pipekey.client import MAX_ENVIRONMENTS

    (isolated / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\npath = "{env}.db"\ncache = true\n'
        '[pipelines.ads]\nscope = "ads"\noptional = ["token"]\n')

    def alive(kind: type) -> int:
        gc.collect()
        return sum(isinstance(o, kind) for o in gc.get_objects())

    chains, caches = alive(Chain), alive(CachedBackend)
    lk = pipekey.load()
    for i in range(40):
        with lk.pipeline("ads", env=f"env_{i:02d}"):
            pass
    assert alive(Chain) - chains <= 1 + MAX_ENVIRONMENTS
    assert alive(CachedBackend) - caches <= 1 + MAX_ENVIRONMENTS
    assert len(lk.open_environments) == 1 + MAX_ENVIRONMENTS
    lk.close()
    assert lk.open_environments == ["dev"]
    assert alive(Chain) - chains <= 1 and alive(CachedBackend) - caches <= 1
    del lk
    assert alive(CachedBackend) - caches == 0
