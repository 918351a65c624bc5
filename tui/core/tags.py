"""The rules a run's tags and note follow, for the app to check what is typed before it asks to save.

They are storage's own (`storage.tags`, standard library only), named here because the app reaches
storage only through the core; the service and the repository check them again when saving.
"""

from __future__ import annotations

from storage.tags import MAX_NOTE_LENGTH, MAX_TAG_LENGTH, TagError, check_note, check_tag, parse_tag_list

__all__ = ["MAX_NOTE_LENGTH", "MAX_TAG_LENGTH", "TagError", "check_note", "check_tag", "parse_tag_list"]
