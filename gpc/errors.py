"""The one error type every layer raises for bad input: its message starts with `source: field:`, and the CLI
prints it as one line with exit status 2."""


class ConfigError(ValueError):
    """A config value, file or input that cannot work."""
