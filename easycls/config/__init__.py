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
from easycls.config.schema import SCHEMA, Key, defaults
from easycls.core.spellings import OLD_SPELLINGS, clear_names

__all__ = ["OLD_SPELLINGS", "SCHEMA", "Key", "clear_names", "defaults", "given_values", "load_config",
           "make_config", "parse_override", "parse_overrides", "read_config_file", "validate"]
