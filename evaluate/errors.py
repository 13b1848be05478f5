"""The error a bad setting raises, in a module of its own so that the tables a check reads (evaluate/envs/suites.py)
and the checks (evaluate/config.py) can both import it without importing each other."""


class ConfigError(ValueError):
    """A config value that cannot work; the message is meant to be shown to the user as is."""
