"""Error types the CLI maps to exit codes (DESIGN: 2 = bad input, 1 = failure while running)."""


class UserError(ValueError):
    """Bad input from the user: the CLI prints the one-line message and exits with code 2."""


def choice_error(what: str, value, valid) -> UserError:
    """A UserError naming the bad value and listing the valid ones."""
    listed = ", ".join(str(v) for v in valid)
    return UserError(f"unknown {what} {value!r}; valid: {listed}")


class InvalidScene(UserError):
    """A sampled or given perturbation produced an invalid scene (interpenetration, object off the table,
    task already solved, target unreachable). State perturbations are re-sampled; in a run the episode is
    stored with ``error = "invalid_scene: <reason>"``."""


class NotRealised(RuntimeError):
    """A perturbation did not take effect: the episode is an error, not a data point."""
