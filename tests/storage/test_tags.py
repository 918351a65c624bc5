"""What a tag may be and how `+a -b c` reads (storage.tags: no database here)."""

from __future__ import annotations

import pytest

from storage.tags import MAX_TAG_LENGTH, TagEdit, TagError, check_tag, parse_edit, parse_tag_list


@pytest.mark.parametrize("tag", ["h200", "fp16-int8", "[/x]", "run:3", "ünïcode", "a" * MAX_TAG_LENGTH])
def test_good_tags(tag):
    assert check_tag(tag) == tag


@pytest.mark.parametrize("tag, why", [
    ("", "must not be empty"),
    ("a" * (MAX_TAG_LENGTH + 1), f"{MAX_TAG_LENGTH + 1} characters, at most {MAX_TAG_LENGTH}"),
    ("two words", "no whitespace"),
    ("tab\there", "no whitespace"),
    ("nbsp\u00a0", "no whitespace"),
    ("bell\x07", "control and formatting"),
    ("esc\x1b[31m", "control and formatting"),
    ("bidi\u202e", "control and formatting"),
    ("a,b", "no commas"),
    ("+a", "must not start with + or -"),
])
def test_bad_tags_are_refused_with_the_reason(tag, why):
    with pytest.raises(TagError, match="tag") as error:
        check_tag(tag)
    assert why in str(error.value)
    assert "\x1b" not in str(error.value) and "\x07" not in str(error.value)  # the message is safe to print


def test_edit_words():
    assert parse_edit(["+fast", "-old", "keep", "+fast"]) == TagEdit(add=("fast", "keep"), remove=("old",))
    assert parse_edit(["+fast", "-old"]).apply(["old", "zz"]) == ["fast", "zz"]
    with pytest.raises(TagError, match="'x': both added and removed"):
        parse_edit(["+x", "-x"])
    with pytest.raises(TagError, match="must not be empty"):
        parse_edit(["-"])


def test_tag_list_as_typed_in_the_app():
    assert parse_tag_list(" a, b  c,,a ") == ["a", "b", "c"]
    assert parse_tag_list("") == []
    with pytest.raises(TagError, match="'-b': must not start"):
        parse_tag_list("a -b")
