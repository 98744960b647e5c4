"""Whether an error means credentials were refused: the guess behind
:meth:`pipekey.run.Run.retry_on_auth_failure`, in one small policy object.

    policy = AuthFailurePolicy()                                  # the default words
    policy = AuthFailurePolicy(words=("password", "28p01"))       # your driver's words
    policy = AuthFailurePolicy(predicate=lambda e: isinstance(e, MyAuthError))

The default is a guess from the error's text (its type name and message), because drivers
say "refused" in many ways; a predicate replaces the guess when you know the exception type.
The text is only inspected, never logged or kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AUTH_WORDS", "AuthFailurePolicy", "looks_like_auth_failure"]

#: the default words: each, found in an error's type name or message, means "refused"
AUTH_WORDS = ("authentication", "password", "access denied", "accessdenied", "unauthorized",
              "forbidden", "invalid credentials", "401", "403", "expiredtoken",
              "signaturedoesnotmatch", "invalidclienttokenid")


@dataclass(frozen=True)
class AuthFailurePolicy:
    """Decides whether an exception is an authentication failure.

    Args:
        words: matched, case-insensitively, against ``"<TypeName> <message>"``.
        predicate: if given, decides alone; ``words`` are then not consulted.
    """

    words: tuple[str, ...] = AUTH_WORDS
    predicate: Callable[[BaseException], bool] | None = None

    def is_auth_failure(self, exc: BaseException) -> bool:
        """True if ``exc`` means the credentials were refused (by the predicate, else the words)."""
        if self.predicate is not None:
            return bool(self.predicate(exc))
        text = f"{type(exc).__name__} {exc}".lower()
        return any(word.lower() in text for word in self.words)


DEFAULT_POLICY = AuthFailurePolicy()


def looks_like_auth_failure(exc: BaseException) -> bool:
    """A guess, from the error's text, that credentials were refused (the default policy)."""
    return DEFAULT_POLICY.is_auth_failure(exc)
