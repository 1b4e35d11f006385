"""Texts set in settings (PORTAL_NAME, HELP_TEXT, the footer, page and app titles...): one text
for every language, or a table with one per language of LANGUAGES, such as
`{ en = "Expenses", de = "Spesen" }`. A person reads the text of their page's language, else
the one of the first of LANGUAGES, which every table must therefore hold."""

from __future__ import annotations


class Text(str):
    """A text from settings: the string of the first of LANGUAGES (so templates written for
    plain strings, a BRAND_DIR's among them, keep working), with every language it was given
    in."""

    versions: tuple[tuple[str, str], ...]  # (language, text), the first language's first

    def __new__(cls, versions: tuple[tuple[str, str], ...]) -> Text:
        text = super().__new__(cls, versions[0][1])
        text.versions = versions
        return text

    def __getnewargs__(self) -> tuple:  # copies and pickles rebuild it from its versions
        return (self.versions,)

    @classmethod
    def of(cls, value: str | dict, languages: list[str]) -> Text:
        """The Text of a checked setting's value (a string, or a table of languages)."""
        if isinstance(value, Text):
            return value
        if isinstance(value, str):
            return cls((("", value.strip()),))

        def rank(item: tuple[str, str]) -> int:
            return languages.index(item[0]) if item[0] in languages else len(languages)

        ranked = sorted(value.items(), key=rank)
        return cls(tuple((language, text.strip()) for language, text in ranked))

    def in_language(self, language: str) -> str:
        """The text in this language, else in the first of LANGUAGES (an empty one given for
        a language counts as none, so no one is shown a blank where others read a title)."""
        for given, text in self.versions:
            if given == language and text:
                return text
        return self.versions[0][1]


def text_problem(value, languages: list[str], known: set[str], wanted: str = "text",
                 required: bool = False) -> str | None:  # fmt: skip
    """What is wrong with a setting's text (None when nothing): it must be a text (non-blank
    if `required`) or a table of texts keyed by languages the portal has (`known`), the first
    of LANGUAGES among them. (A language left out of LANGUAGES may keep its texts.)"""
    if isinstance(value, str):
        return wanted if required and not value.strip() else None
    if not isinstance(value, dict) or not value:
        other = (languages[1:] or ["de"])[0]
        example = f'{{ {languages[0]} = "...", {other} = "..." }}'
        return f"{wanted}, or a table of it per language such as {example}"
    unknown = [repr(language) for language in value if language not in known]
    if unknown:
        return (f"{', '.join(unknown)}: the portal has no such language, so the text would "
                f"never be shown (it has: {', '.join(sorted(known))})")  # fmt: skip
    for language, text in value.items():
        if not isinstance(text, str):
            return f"{language}: {wanted}"
    first = value.get(languages[0])
    if first is None or (required and not first.strip()):
        first_language = languages[0]
        return (
            f"the {first_language} text is missing: it is shown to whoever asks for a "
            f"language the table has none for ({first_language} is the first of LANGUAGES)"
        )
    return None
