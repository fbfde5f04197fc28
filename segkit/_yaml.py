"""YAML for configs: scalars that keep the text as written, and duplicate keys as errors.

Kept apart from :mod:`segkit.config` so that the dataclasses and their coercion read alone.
"""

from __future__ import annotations

from typing import Any

import yaml

from segkit.errors import ConfigError


class Scalar(str):
    """A YAML scalar as written (the string itself) and what YAML 1.1 resolves it to (``.value``).

    ``str`` fields take the text, every other field (and untyped mappings such as
    ``model.options``) the resolved value.
    """

    value: Any

    def __new__(cls, text: str, value: Any) -> Scalar:
        scalar = super().__new__(cls, text)
        scalar.value = value
        return scalar


class DuplicateKey(ConfigError):
    """A mapping in a YAML config holds the same key twice (YAML would keep only the last)."""

    def __init__(self, key: str, first: int, second: int) -> None:
        super().__init__(f"key {key!r} appears twice (lines {first} and {second}); merge them.")


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that returns every scalar as a :class:`Scalar`."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        value = super().construct_object(node, deep)
        if isinstance(node, yaml.ScalarNode):
            return Scalar(node.value, value)
        return value


def check_unique_keys(node: yaml.Node, prefix: str = "", seen: set[int] | None = None) -> None:
    """Raise :class:`DuplicateKey` for a key that appears twice in one mapping, at any depth."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias to a node already checked (or a recursive anchor)
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            check_unique_keys(item, f"{prefix}[{i}]", seen)
    elif isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            # "<<: *base" may repeat keys on purpose; non-scalar keys have no place in a config
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            name, line = key_node.value, key_node.start_mark.line + 1
            dotted = f"{prefix}.{name}" if prefix else name
            if name in lines:
                raise DuplicateKey(dotted, lines[name], line)
            lines[name] = line
            check_unique_keys(value_node, dotted, seen)


def load_yaml(text: str) -> Any:
    """Parse YAML text with scalars as :class:`Scalar`; duplicate keys raise :class:`DuplicateKey`."""
    loader = ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_unique_keys(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def plain(value: Any) -> Any:
    """``value`` with every :class:`Scalar` in it replaced by its resolved YAML value."""
    if isinstance(value, Scalar):
        return value.value
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def is_null(value: Any) -> bool:
    """Whether a config value means None: YAML null, ``~``, or the word none/null."""
    return plain(value) is None or (isinstance(value, str) and value.lower() in ("none", "null"))
