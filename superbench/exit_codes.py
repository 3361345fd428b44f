"""Exit codes of every `superbench` command, defined once.

A usage error (bad input found before any work) and a runtime failure (the work itself
broke) get different codes, so CI can tell "my config is wrong" from "training blew up".
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    #: The command ran and its verdict is negative: a regression (`check`), a contract violation (`validate`).
    FAILED = 1
    #: Bad input caught before work: unknown name, invalid recipe/manifest/baseline, missing file, bad option.
    USAGE = 2
    #: The work itself failed: non-finite loss, extraction error, full disk, an I/O error.
    RUNTIME = 3
    #: An unexpected exception (a bug) inside a command: the same code as RUNTIME, never FAILED,
    #: so a crashing `check` is not mistaken for a regression.
    INTERNAL = 3
    #: Ctrl-C / SIGINT; finished work is kept and a re-run resumes.
    INTERRUPTED = 130
    #: The output's reader went away (`superbench ... | head`): 128 + SIGPIPE, as a shell reports it, silently.
    BROKEN_PIPE = 141
    #: SIGTERM (128 + 15, what a shell reports for it); handled exactly as SIGINT.
    TERMINATED = 143


#: OSErrors that mean "the path you gave is wrong", not "the machine failed".
_USAGE_OS_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code a command returns when `exc` escapes it."""
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, _USAGE_OS_ERRORS) or isinstance(exc, (LookupError, ValueError, ImportError)):
        return ExitCode.USAGE
    return ExitCode.RUNTIME
