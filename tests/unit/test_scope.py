"""Scopes: templates, the walk, and the policy of what a run may read."""

from __future__ import annotations

import pytest

from pipekey import InvalidKey, UsageError
from pipekey.policy import RunPolicy, fill_template
from pipekey.scope import Scope


def test_fill_template_and_errors() -> None:
    """Parameters fill the template; missing or malformed ones are clear errors."""
    assert fill_template("m/{account}/{env}", {"account": "a1", "env": "prod"}, "x") == "m/a1/prod"
    with pytest.raises(UsageError, match="needs parameter 'account'"):
        fill_template("m/{account}", {}, "pipeline 'p' scope")
    for bad in ["a/b", "..", "", "a b"]:
        with pytest.raises(UsageError, match="is not a valid key segment"):
            fill_template("m/{account}", {"account": bad}, "x")


@pytest.mark.parametrize("bad, problem", [
    ("fake pw x", "9 characters, with whitespace"),
    ("fake/pw", "7 characters, with '/'"),
    ("fake\x01pw", "7 characters, with a control character"),
    ("fake\u00e9pw!", "8 characters, with a non-ASCII character and punctuation other"),
    (42, "not text but int"),
])
def test_a_value_that_is_no_segment_is_never_quoted(bad: object, problem: str) -> None:
    """A scope parameter or environment that is no key segment (maybe a secret pasted by
    mistake) is refused naming the parameter and what is wrong, never quoting it: the
    template filler, the broker's request check, the manifest's and the client's
    environment check."""
    from pipekey.broker import _check
    from pipekey.manifest import Manifest

    refusals = []
    for refuse in (lambda: fill_template("m/{account}", {"account": bad}, "x"),  # type: ignore[dict-item]
                   lambda: _check("ads", None, {"account": bad}, None),
                   lambda: _check("ads", bad, {}, None),  # type: ignore[arg-type]
                   lambda: Manifest.default().check_env(bad)):  # type: ignore[arg-type]
        with pytest.raises(UsageError) as caught:
            refuse()
        refusals.append(str(caught.value))
    assert all(problem in message for message in refusals), refusals
    assert "parameter 'account' is not a valid key segment" in refusals[0]
    assert all("fake" not in message and "pw" not in message for message in refusals)


def test_walk_most_specific_first_then_shared() -> None:
    """A declared name is walked from the scope up to the root, then shared/, each level
    labelled."""
    walk = Scope("marketing/facebook/acct_42", names=["access_token"]).walk("access_token")
    assert [(lvl.label, key) for lvl, key in walk] == [
        ("marketing/facebook/acct_42", "marketing/facebook/acct_42/access_token"),
        ("marketing/facebook", "marketing/facebook/access_token"),
        ("marketing", "marketing/access_token"),
        ("shared", "shared/access_token"),
    ]


def test_undeclared_names_skip_parent_levels() -> None:
    """An undeclared name is looked for at the scope and under shared/ only: at a parent
    level it could be a sibling's scope (acct_43) or its whole document."""
    walk = Scope("marketing/facebook/acct_42", names=["access_token"]).walk("acct_43")
    assert [key for _, key in walk] == ["marketing/facebook/acct_42/acct_43", "shared/acct_43"]


@pytest.mark.parametrize("prefix", [
    pytest.param("marketing/facebook/access_token", id="parameter-value"),
    pytest.param("marketing/access_token/acct_42", id="literal-segment"),
])
def test_a_scope_segment_that_is_a_declared_name_is_refused(prefix: str) -> None:
    """A scope whose segment below a parent level is a declared name is refused: siblings
    read that key as the name, and it would be this scope's subtree."""
    with pytest.raises(UsageError, match="'access_token' is also a declared name"):
        Scope(prefix, names=["access_token"])
    assert Scope("access_token/x", names=["access_token"]).prefix == "access_token/x"


def test_names_are_one_segment() -> None:
    """A name with a slash is refused: at a parent level it would reach a sibling's subtree."""
    with pytest.raises(InvalidKey, match="one segment"):
        Scope("marketing/facebook/acct_42").walk("acct_43/access_token")


@pytest.mark.parametrize("key, allowed", [
    ("marketing/facebook/acct_42/access_token", True),
    ("marketing/facebook/acct_42/deep/er/key", True),
    ("marketing/facebook/app_secret", True),
    ("marketing/region", True),
    ("shared/slack_token", True),
    ("shared/team/webhook", True),
    ("finance/stripe/key", True),          # granted prefix
    ("ops/pager", True),                    # granted exact key
    ("connections/snowflake_prod", True),   # mapped connection
    ("marketing/facebook/acct_43/access_token", False),
    ("marketing/facebook/acct_43", False),  # a sibling's scope: in SM, its whole document
    ("marketing/facebook/other_name", False),  # at a parent level, declared names only
    ("marketing/other_name", False),
    ("marketing/facebook/app_secret/x", False),  # a declared name's key, not its subtree
    ("marketing/facebook/acct_42", True),   # the scope itself
    ("shared/acct_43", True),
    ("marketing/facebook/acct_43/x", False),
    ("marketing/google/token", False),
    ("finance/stripe_other", False),
    ("ops/pager/extra", True),              # a grant is a prefix
    ("ops/pagers", False),
    ("connections/snowflake_dev", False),
    ("sharedx/token", False),
])
def test_policy(key: str, allowed: bool) -> None:
    """A run reads its scope, its declared names at parent levels, shared/, grants and mapped
    keys."""
    policy = RunPolicy("marketing/facebook/acct_42", grants=("finance/stripe", "ops/pager"),
                       connection_keys={"warehouse": "connections/snowflake_prod"},
                       names=frozenset({"app_secret", "region"}))
    assert policy.allows(key) is allowed
