"""What a run's tag and note may be, and how a tag edit (`+fast -old keep`) reads.

Tags are short labels to filter runs by (`dinf runs --tag`), so one must survive a shell and a
table cell: at most `MAX_TAG_LENGTH` characters, no whitespace, no control or invisible formatting
characters, no comma (lists of tags are written with them), and no leading '+' or '-' (they mark an
edit). Anything else printable is allowed, brackets included: tags are shown as data, never markup.
A note is free text (newlines allowed) up to `MAX_NOTE_LENGTH` characters.

Standard library only (no sqlmodel), so the app's dialogs can check input before anything is sent.
Storing tags is `storage.repo`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_TAG_LENGTH = 32
MAX_NOTE_LENGTH = 4000


class TagError(ValueError):
    """A bad tag or note; the message names it and says what a good one looks like."""


def check_tag(tag: str) -> str:
    """`tag` if it is a valid tag, else TagError saying why."""
    # Errors show the tag with !r: repr escapes every character that is not printable.
    if not isinstance(tag, str) or not tag:
        raise TagError("tag: must not be empty")
    if len(tag) > MAX_TAG_LENGTH:
        raise TagError(f"tag {tag!r}: {len(tag)} characters, at most {MAX_TAG_LENGTH} allowed")
    for ch in tag:
        if ch.isspace():
            raise TagError(f"tag {tag!r}: no whitespace allowed; join words with - or _")
        if not ch.isprintable():  # control, formatting (bidi overrides), unassigned
            raise TagError(f"tag {tag!r}: control and formatting characters are not allowed")
    if "," in tag:
        raise TagError(f"tag {tag!r}: no commas allowed (they separate tags)")
    if tag[0] in "+-":
        raise TagError(f"tag {tag!r}: must not start with + or - (they mark adding and removing)")
    return tag


def check_tags(tags: Iterable[str]) -> list[str]:
    """Every tag checked, duplicates dropped, in the order given."""
    return list(dict.fromkeys(check_tag(tag) for tag in tags))


def check_note(note: str) -> str:
    """The note as stored (trailing whitespace dropped), or TagError if it is too long."""
    if not isinstance(note, str):
        raise TagError("note: must be text")
    note = note.rstrip()
    if len(note) > MAX_NOTE_LENGTH:
        raise TagError(f"note: {len(note)} characters, at most {MAX_NOTE_LENGTH} allowed")
    return note


@dataclass(frozen=True)
class TagEdit:
    """Tags to add and to remove, as `dinf tag RUN +a -b c` asks (a bare word adds)."""

    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()

    def apply(self, tags: Iterable[str]) -> list[str]:
        """The tags after this edit, sorted."""
        return sorted((set(tags) - set(self.remove)) | set(self.add))


def parse_edit(words: Iterable[str]) -> TagEdit:
    """`+a -b c` as a TagEdit; TagError naming the first bad word. Adding and removing one tag is an error."""
    add, remove = [], []
    for word in words:
        if word.startswith("-"):
            remove.append(check_tag(word[1:]))
        else:
            add.append(check_tag(word[1:] if word.startswith("+") else word))
    both = sorted(set(add) & set(remove))
    if both:
        raise TagError(f"tag {both[0]!r}: both added and removed; give it once")
    return TagEdit(tuple(dict.fromkeys(add)), tuple(dict.fromkeys(remove)))


def parse_tag_list(text: str) -> list[str]:
    """A whole set of tags typed as one line ('a b' or 'a, b'), checked; TagError on the first bad one."""
    return check_tags(word for word in text.replace(",", " ").split())
