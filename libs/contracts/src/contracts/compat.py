"""Compatibility of two JSON Schemas of one event: which changes would break a reader or writer.

Breaking: a property removed; a property's type changed or narrowed (types, enum values, ``anyOf``
options, ``const``, ``format``, tighter length/size/range limits); an optional property made
required; a new required property. Additive changes (a new optional property, a new enum value,
a wider type) pass. Local ``$ref``s into ``$defs`` are resolved; objects and arrays are compared
recursively.
"""

from typing import Any

Schema = dict[str, Any]

# Limits that narrow a type when added or moved in the given direction.
_UPPER_LIMITS = ("maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum")
_LOWER_LIMITS = ("minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum")


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Return why ``new`` is not a compatible successor of ``old`` (empty if it is)."""
    name = _schema_name(new) or _schema_name(old) or "schema"
    comparer = _Comparer(old.get("$defs", {}), new.get("$defs", {}))
    comparer.compare(old, new, "")
    return [f"{name}: {reason}" for reason in comparer.reasons]


def _schema_name(schema: Schema) -> str | None:
    type_field = schema.get("properties", {}).get("type", {})
    name = type_field.get("const", type_field.get("default", schema.get("title")))
    return name if isinstance(name, str) else None


def _label(path: str) -> str:
    return f"property '{path}'" if path else "the root"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Comparer:
    def __init__(self, old_defs: dict[str, Schema], new_defs: dict[str, Schema]) -> None:
        self.old_defs, self.new_defs = old_defs, new_defs
        self.reasons: list[str] = []
        self._active: set[tuple[str, str, str]] = set()  # guards recursive $refs

    def compare(self, old: Schema, new: Schema, path: str) -> None:
        key = (old.get("$ref", ""), new.get("$ref", ""), path)
        if key[0] and key[1]:
            if key in self._active:
                return
            self._active.add(key)
        old, new = _resolve(old, self.old_defs), _resolve(new, self.new_defs)
        old_options, new_options = _options(old), _options(new)
        if len(old_options) > 1 or len(new_options) > 1:
            self._compare_unions(old_options, new_options, path)
        else:
            self._compare_plain(old, new, path)
        self._active.discard(key)

    def _compare_unions(self, old: list[Schema], new: list[Schema], path: str) -> None:
        # Every option the old schema allowed must still be allowed by some new option.
        for option in old:
            attempts = [self._reasons_for(option, candidate, path) for candidate in new]
            if any(not reasons for reasons in attempts):
                continue
            same_kind = [
                reasons
                for candidate, reasons in zip(new, attempts, strict=True)
                if _describe(_resolve(candidate, self.new_defs))
                == _describe(_resolve(option, self.old_defs))
            ]
            if len(same_kind) == 1:
                self.reasons.extend(same_kind[0])
            else:
                described = _describe(_resolve(option, self.old_defs))
                self.reasons.append(f"{_label(path)} no longer accepts {described}")

    def _reasons_for(self, old: Schema, new: Schema, path: str) -> list[str]:
        inner = _Comparer(self.old_defs, self.new_defs)
        inner._active = set(self._active)
        inner.compare(old, new, path)
        return inner.reasons

    def _compare_plain(self, old: Schema, new: Schema, path: str) -> None:
        label = _label(path)
        old_types, new_types = _types(old), _types(new)
        if old_types and new_types and not old_types <= _widen(new_types):
            before, after = "|".join(sorted(old_types)), "|".join(sorted(new_types))
            self.reasons.append(f"{label} type changed from {before} to {after}")
            return
        if not old_types and new_types:
            self.reasons.append(f"{label} narrowed to type {'|'.join(sorted(new_types))}")
        self._compare_values(old, new, label)
        self._compare_limits(old, new, label)
        self._compare_objects(old, new, path)
        if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
            self.compare(old["items"], new["items"], f"{path}[]")

    def _compare_values(self, old: Schema, new: Schema, label: str) -> None:
        if "enum" in new:
            removed = [v for v in old.get("enum", []) if v not in new["enum"]]
            if "enum" not in old and "const" not in old:
                self.reasons.append(f"{label} narrowed to enum values {new['enum']!r}")
            elif removed:
                values = ", ".join(repr(v) for v in removed)
                self.reasons.append(f"{label} enum value(s) removed: {values}")
        if "const" in new and old.get("const", new["const"]) != new["const"]:
            self.reasons.append(f"{label} changed from {old['const']!r} to {new['const']!r}")
        elif "const" in new and "const" not in old:
            self.reasons.append(f"{label} narrowed to the constant {new['const']!r}")
        if "format" in new and old.get("format") != new["format"]:
            before = old.get("format", "any")
            self.reasons.append(f"{label} format changed from {before} to {new['format']}")
        if "pattern" in new and old.get("pattern") != new["pattern"]:
            self.reasons.append(f"{label} pattern changed to {new['pattern']!r}")

    def _compare_limits(self, old: Schema, new: Schema, label: str) -> None:
        for limit in _UPPER_LIMITS + _LOWER_LIMITS:
            if limit not in new:
                continue
            before, after = old.get(limit), new[limit]
            tighter = limit in _UPPER_LIMITS and (before is None or after < before)
            tighter |= limit in _LOWER_LIMITS and (before is None or after > before)
            if tighter:
                self.reasons.append(f"{label} narrowed: {limit} {before} -> {after}")

    def _compare_objects(self, old: Schema, new: Schema, path: str) -> None:
        old_props: dict[str, Schema] = old.get("properties", {})
        new_props: dict[str, Schema] = new.get("properties", {})
        old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
        for prop, old_prop in old_props.items():
            where = _join(path, prop)
            if prop not in new_props:
                self.reasons.append(f"property '{where}' removed")
                continue
            if prop in new_required and prop not in old_required:
                self.reasons.append(f"property '{where}' made required")
            self.compare(old_prop, new_props[prop], where)
        for prop in sorted(new_required - old_props.keys()):
            if "default" not in new_props.get(prop, {}):
                self.reasons.append(f"new required property '{_join(path, prop)}'")
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, dict) and isinstance(new_extra, dict):
            self.compare(old_extra, new_extra, _join(path, "*"))
        elif old_extra is not False and new_extra is False:
            self.reasons.append(f"{_label(path)} no longer accepts additional properties")


def _resolve(schema: Schema, defs: dict[str, Schema]) -> Schema:
    seen: set[str] = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/$defs/") or ref in seen:
            raise ValueError(f"cannot resolve $ref {ref!r}: only local #/$defs/ refs are supported")
        seen.add(ref)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**defs[ref.removeprefix("#/$defs/")], **siblings}
    return schema


def _options(schema: Schema) -> list[Schema]:
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            options: list[Schema] = schema[keyword]
            return options
    return [schema]


def _types(schema: Schema) -> set[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {str(t) for t in declared}
    return set()


def _widen(types: set[str]) -> set[str]:
    # A number accepts every integer.
    return types | {"integer"} if "number" in types else types


def _describe(schema: Schema) -> str:
    if "const" in schema:
        return repr(schema["const"])
    types = _types(schema)
    return "|".join(sorted(types)) if types else str(schema.get("title", "a schema"))
