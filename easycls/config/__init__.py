"""The config layer: defaults and a typed schema, validation, ``key=value`` overrides and ``_base_`` inheritance."""
from easycls.config.loading import (
    given_values,
    load_config,
    make_config,
    parse_override,
    parse_overrides,
    read_config_file,
    validate,
)
from easycls.config.schema import KEY_SPELLINGS, SCHEMA, Key, defaults

__all__ = ["KEY_SPELLINGS", "SCHEMA", "Key", "defaults", "given_values", "load_config", "make_config",
           "parse_override", "parse_overrides", "read_config_file", "validate"]
