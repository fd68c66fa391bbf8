"""Schema compatibility: breaking edits are reported, additive ones pass."""

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from contracts import Event, breaking_changes


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class ColourMore(StrEnum):
    RED = "red"
    BLUE = "blue"
    GREEN = "green"


class ColourLess(StrEnum):
    RED = "red"


class Inner(BaseModel):
    title: str
    size: int


class InnerNoTitle(BaseModel):
    size: int


class Base(Event):
    type: Literal["things.happened.v1"] = "things.happened.v1"
    count: int
    colour: Colour
    inner: Inner
    items: list[Inner]
    label: str | None = None


def schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def test_identical_schemas_are_compatible() -> None:
    assert breaking_changes(schema(Base), schema(Base)) == []


def test_new_optional_field_and_new_enum_member_are_additive() -> None:
    class Additive(Base):
        colour: ColourMore  # type: ignore[assignment]
        note: str | None = None
        retries: int = 0

    assert breaking_changes(schema(Base), schema(Additive)) == []


def test_widening_to_optional_and_loosening_limits_are_additive() -> None:
    class Narrow(Base):
        name: str = Field(default="", max_length=10)

    class Wide(Base):
        count: int | None  # type: ignore[assignment]
        name: str | None = Field(default=None, max_length=20)

    assert breaking_changes(schema(Narrow), schema(Wide)) == []


def test_removed_field_is_breaking_even_when_nested() -> None:
    class Removed(Base):
        inner: InnerNoTitle  # type: ignore[assignment]
        items: list[InnerNoTitle]  # type: ignore[assignment]

    assert breaking_changes(schema(Base), schema(Removed)) == [
        "things.happened.v1: property 'inner.title' removed",
        "things.happened.v1: property 'items[].title' removed",
    ]


def test_retyped_field_is_breaking() -> None:
    class Retyped(Base):
        count: str  # type: ignore[assignment]

    assert breaking_changes(schema(Base), schema(Retyped)) == [
        "things.happened.v1: property 'count' type changed from integer to string"
    ]


def test_removed_enum_member_is_breaking() -> None:
    class Fewer(Base):
        colour: ColourLess  # type: ignore[assignment]

    assert breaking_changes(schema(Base), schema(Fewer)) == [
        "things.happened.v1: property 'colour' enum value(s) removed: 'blue'"
    ]


def test_optional_made_required_is_breaking() -> None:
    class Required(Base):
        label: str  # type: ignore[assignment]

    assert breaking_changes(schema(Base), schema(Required)) == [
        "things.happened.v1: property 'label' made required",
        "things.happened.v1: property 'label' no longer accepts null",
    ]


def test_new_required_field_is_breaking() -> None:
    class NewRequired(Base):
        reason: str

    assert breaking_changes(schema(Base), schema(NewRequired)) == [
        "things.happened.v1: new required property 'reason'"
    ]


def test_tightened_limit_is_breaking() -> None:
    class Loose(Base):
        name: str = Field(default="", max_length=200)

    class Tight(Base):
        name: str = Field(default="", max_length=100)

    assert breaking_changes(schema(Loose), schema(Tight)) == [
        "things.happened.v1: property 'name' narrowed: maxLength 200 -> 100"
    ]
