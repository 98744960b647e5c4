"""Issue 31, the first hour, second pass: what a new user still trips on, through the real
`pipekey` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import run_cli

TOKEN = "fake-token-acct42"


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- 4. a misspelt parameter is named, with did-you-mean -----------------------------------
INSTANCE_TYPO = ('[backends.env]\ntype = "env"\n'
                 '[pipelines.facebook_ads]\nscope = "marketing/facebook/{account}"\n'
                 'requires = ["access_token"]\ninstances = [{ acount = "acct_42" }]\n')
TEMPLATE_TYPO = ('[backends.env]\ntype = "env"\n'
                 '[pipelines.loader]\nscope = "loader"\n'
                 'connections = { warehouse = "connections/warehouse_{envv}" }\n')


@pytest.mark.parametrize("manifest, detail", [
    pytest.param(INSTANCE_TYPO, "instance 1 has unknown parameter 'acount' (did you mean "
                 "'account'?)", id="instance"),
    pytest.param(TEMPLATE_TYPO, "connection 'warehouse' template 'connections/warehouse_{envv}' "
                 "uses parameter 'envv' (did you mean '{env}'?)", id="template"),
])
def test_check_names_a_misspelt_parameter(isolated: Path, manifest: str, detail: str) -> None:
    """A misspelt parameter is the cause: check says which, where, with did-you-mean, not
    "needs parameters: account (add instances = [...])" when instances are there."""
    (isolated / "pipekey.toml").write_text(manifest)
    result = run_cli("check", "--json")
    assert result.returncode == 1
    finding, = json.loads(result.stdout)["findings"]
    assert finding["status"] == "invalid" and finding["detail"] == detail


def test_check_names_an_unknown_param_option(isolated: Path) -> None:
    """`--param acount=...` is named as --param's, with did-you-mean."""
    (isolated / "pipekey.toml").write_text(INSTANCE_TYPO)
    given = run_cli("check", "--param", "acount=acct_42", "--json")
    assert given.returncode == 1
    assert json.loads(given.stdout)["findings"][0]["detail"] == (
        "unknown parameter 'acount' in --param (did you mean 'account'?)")


def test_doctor_refuses_what_check_refuses_about_parameters(isolated: Path) -> None:
    """doctor fails (rc 1) on either typo, with check's words; without one it passes."""
    for manifest, words in [(INSTANCE_TYPO, "pipeline 'facebook_ads': instance 1 has unknown "
                                            "parameter 'acount' (did you mean 'account'?)"),
                            (TEMPLATE_TYPO, "pipeline 'loader': connection 'warehouse' "
                                            "template 'connections/warehouse_{envv}' uses "
                                            "parameter 'envv' (did you mean '{env}'?)")]:
        (isolated / "pipekey.toml").write_text(manifest)
        result = run_cli("doctor")
        assert result.returncode == 1, result.stdout
        assert f"FAIL {words}" in _lines(result.stdout)
        assert json.loads(run_cli("doctor", "--json").stdout)["problems"] == [words]
    (isolated / "pipekey.toml").write_text(INSTANCE_TYPO.replace("acount", "account"))
    assert run_cli("doctor").returncode == 0


# -- 6. a missing scope parameter: said once, with the --param to pass ----------------------
SCOPED = ('[backends.env]\ntype = "env"\n'
          '[pipelines.facebook_ads]\nscope = "marketing/facebook/{account}"\n'
          'requires = ["access_token"]\n')


def test_a_missing_scope_parameter_shows_the_param_to_pass(isolated: Path) -> None:
    """run and explain name the pipeline once and show `--param account=...`."""
    (isolated / "pipekey.toml").write_text(SCOPED)
    expected = ["pipekey: error: pipeline 'facebook_ads': scope 'marketing/facebook/{account}' "
                "needs parameter 'account' (pass --param account=...)"]
    for args in (["run", "--pipeline", "facebook_ads", "--", "true"],
                 ["explain", "--pipeline", "facebook_ads", "access_token"]):
        result = run_cli(*args)
        assert result.returncode == 2
        assert _lines(result.stderr) == expected


def test_the_library_names_the_pipeline_once(isolated: Path) -> None:
    """Outside the CLI, the run's own error does not repeat the pipeline."""
    import pipekey
    from pipekey.errors import UsageError

    (isolated / "pipekey.toml").write_text(SCOPED)
    with pytest.raises(UsageError) as caught:
        pipekey.load().pipeline("facebook_ads")
    assert str(caught.value).count("facebook_ads") == 1


# -- 7. an unknown field is the cause: said first ------------------------------------------
def test_a_misspelt_field_is_named_before_what_it_left_missing(isolated: Path) -> None:
    """`members` for `member_of`: the unknown field, with did-you-mean, is the one problem
    named (it is the cause of `member_of` missing)."""
    (isolated / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\n[credentials.warehouse_rw]\ntype = "postgres_role"\n'
        'admin = "connections/warehouse_admin"\nmembers = ["etl_writer"]\n')
    result = run_cli("doctor")
    assert result.returncode == 2
    assert _lines(result.stderr) == [
        f"pipekey: error: {isolated / 'pipekey.toml'}: credentials.warehouse_rw.members: "
        "unknown field (did you mean 'member_of'?)"]


# -- 9. hints that fit the situation ---------------------------------------------------------
def test_check_with_no_pipelines_says_to_add_one_not_param(isolated: Path) -> None:
    """No pipelines: --param cannot help; the hint is the manifest table."""
    (isolated / "pipekey.toml").write_text('[backends.env]\ntype = "env"\n')
    result = run_cli("check")
    assert result.returncode == 1
    error = _lines(result.stderr)[-1]
    assert error == (f"pipekey: error: nothing to check (no pipelines): add a [pipelines.NAME] "
                     f"table to {isolated / 'pipekey.toml'} (see docs/manifest.md), or pass "
                     "--allow-skipped")


def test_run_help_says_the_json_summary_goes_to_stderr(isolated: Path) -> None:
    """run's --json help says what happens: the summary on stderr, stdout the command's."""
    text = " ".join(run_cli("run", "--help").stdout.split())
    assert "Print JSON on stdout instead of text" not in text
    assert ("--json When CMD ends, print a JSON summary (names, never values) on stderr; "
            "stdout stays CMD's") in text


def test_copy_of_a_bare_file_suggests_file_prefix(isolated: Path) -> None:
    """`copy .dlt/secrets.toml local`: the one form that fits, not the list of every form."""
    (isolated / ".dlt").mkdir()
    (isolated / ".dlt" / "secrets.toml").write_text('api_key = "fake-api-key"\n')
    result = run_cli("copy", ".dlt/secrets.toml", "local", "--dry-run")
    assert result.returncode == 2
    assert _lines(result.stderr) == ["pipekey: error: unknown store '.dlt/secrets.toml': name "
                                     "a file or folder as file:.dlt/secrets.toml"]


# -- 5. a mistyped environment: blamed on where it came from, not written into ---------------
def test_an_unlisted_env_is_blamed_on_env_not_on_the_file(isolated: Path) -> None:
    """`--env=prd` (or PIPEKEY_ENV=prd) against environments = ["dev", "prod"]: the error
    names --env (PIPEKEY_ENV), not `pipekey.toml: env:`."""
    (isolated / "pipekey.toml").write_text('environments = ["dev", "prod"]\n'
                                           '[backends.local]\ntype = "local"\n')
    where = f"is not one of environments ['dev', 'prod'] in {isolated / 'pipekey.toml'}"
    flag = run_cli("--env=prd", "get", "shared/t")
    assert flag.returncode == 2
    assert _lines(flag.stderr) == [f"pipekey: error: environment 'prd' (from --env) {where}"]
    variable = run_cli("get", "shared/t", env={"PIPEKEY_ENV": "prd"})
    assert _lines(variable.stderr) == [
        f"pipekey: error: environment 'prd' (from $PIPEKEY_ENV) {where}"]


@pytest.fixture
def stores_per_env(isolated: Path, master_key: str) -> Path:
    """No environments list; a local store per environment, dev's and prod's made."""
    (isolated / "pipekey.toml").write_text('env = "dev"\n[backends.local]\ntype = "local"\n'
                                           'path = ".pipekey/{env}.db"\n')
    for env in ("dev", "prod"):
        assert run_cli("--env", env, "set", "shared/t", input=TOKEN).returncode == 0
    return isolated


def test_a_typo_env_without_a_store_is_a_warning_not_a_set_hint(stores_per_env: Path) -> None:
    """`--env prdo get`: the hint says prdo has no store and which environments have, before
    the set command; doctor marks the store `warn` with the same words (exit 0)."""
    words = "environment 'prdo' (from --env) has no store yet (environments with stores: dev, prod)"
    got = run_cli("--env", "prdo", "get", "shared/t")
    assert got.returncode == 1
    assert _lines(got.stderr) == [f"pipekey: error: secret 'shared/t' not found in local; "
                                  f"{words}: check --env, or set it: pipekey --env prdo set "
                                  "shared/t"]
    doctor = run_cli("--env", "prdo", "doctor")
    assert doctor.returncode == 0
    assert any(line.startswith("warn  local") for line in doctor.stdout.splitlines())
    assert f"warn {words}: check --env, or create it with `pipekey set`" in doctor.stdout
    report = json.loads(run_cli("doctor", "--json", env={"PIPEKEY_ENV": "prdo"}).stdout)
    assert report["warnings"] == [words.replace("--env", "$PIPEKEY_ENV")]
    assert run_cli("--env", "prod", "doctor", "--json").stdout.count("warnings\": []") == 1
    assert "no store yet" not in run_cli("--env", "prod", "get", "shared/nope").stderr
