"""Griffe extension (mkdocs.yml: mkdocstrings' `extensions`): read deft6g's Sionna-style docstrings.

The docstrings follow Sionna's form (docs/design.md §7): numpydoc-underlined sections Parameters / Input / Output
/ Note / Example, entries written `name : [shape], dtype` with the description indented below or after ` -- `, and
maths as reStructuredText (`:math:` roles, `.. math::` blocks). Griffe's numpy parser knows neither Input nor
Output and checks Parameters against the signature (a Sionna Block's are its constructor's, its Input its call's),
so this extension parses every docstring itself into the sections mkdocstrings renders: Parameters, Input and
Output as parameter lists under their own titles, Example as a Python console block, any other section as an
admonition, and the maths as `$...$` / `$$...$$` for pymdownx.arithmatex and KaTeX.
"""

import re
from pathlib import Path

import griffe
from markdown.extensions.toc import slugify

UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
MATH_ROLE = re.compile(r":math:`([^`]+)`")
XREF_ROLE = re.compile(r":(?:attr|class|func|meth|mod|obj|data):`~?([^`]+)`")
MATH_BLOCK = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
# An entry's head: a name (or a few, comma-separated, or a type), optionally a parenthesised remark.
# Code spans and maths, left as they are by `escape_brackets`.
PROTECTED = re.compile(r"(`+[^`]*`+|\$\$.*?\$\$|\$[^$\n]+\$)", re.DOTALL)
BRACKETED = re.compile(r"\[([A-Za-z_][\w.]*)\](?![(\[])")
ENTRY = re.compile(r"^\*{0,2}[\w.`]+(?:\s*,\s*[\w.`]+)*(?:\s*\(.*\))?$")
# Entries packed on one line, `a : [B, N], complex; b : [B, K], float;`: split at "; " before a name and " : ".
PACKED = re.compile(r";\s+(?=\*{0,2}[\w.`]+(?:\s*,\s*[\w.`]+)* : )|;\s*$")
DESIGN_NOTES = Path(__file__).resolve().parents[1] / "design.md"
CITATION = re.compile(r"(?:docs/)?design\.md §(\d+)")
PARAMETER_SECTIONS = ("Parameters", "Input", "Output")
EXAMPLE_SECTIONS = ("Example", "Examples")


def _indent(line):
    return len(line) - len(line.lstrip())


def rst_to_markdown(text):
    """`text` with `.. math::` blocks as `$$` blocks (same indent, blank lines around), `:math:` roles as `$...$`
    and cross-reference roles (`:attr:` ...) as code."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        m = MATH_BLOCK.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, body = m.group(1), [m.group(2).strip()]
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(indent)):
            body.append(lines[i].strip())
            i += 1
        body = [b for b in body if b]
        out += ["", indent + "$$", *(indent + b for b in body), indent + "$$", ""]
    text = MATH_ROLE.sub(lambda m: "$" + m.group(1).strip() + "$", "\n".join(out))
    return XREF_ROLE.sub(r"`\1`", text)


def escape_brackets(text):
    """`text` with a bracketed word outside code and maths (a token such as [SEP], a shape such as [K]) escaped,
    so that Markdown and mkdocs-autorefs do not read it as a cross-reference."""
    parts = PROTECTED.split(text)
    return "".join(part if i % 2 else BRACKETED.sub(r"\\[\1\\]", part) for i, part in enumerate(parts))


def design_anchors():
    """{section number: its anchor on the design-notes page} from the `## n. Title` headings of docs/design.md."""
    headings = re.findall(r"^## ((\d+)\. .*)$", DESIGN_NOTES.read_text(), flags=re.MULTILINE)
    return {number: slugify(title, "-") for title, number in headings}


def link_citations(text, anchors):
    """`text` with each "docs/design.md §n" as a link to that section of the design notes (API pages sit one folder
    below docs/); a citation of a section the notes lack stays plain text (tests/test_hygiene.py catches it)."""
    def link(m):
        return f"[{m.group(0)}](../design.md#{anchors[m.group(1)]})" if m.group(1) in anchors else m.group(0)
    return CITATION.sub(link, text)


def split_sections(text):
    """[(title or None, [lines])]: the text before the first numpydoc heading, then one item per heading."""
    lines, sections, i = text.split("\n"), [(None, [])], 0
    while i < len(lines):
        line = lines[i]
        heading = (line.strip() and i + 1 < len(lines) and UNDERLINE.match(lines[i + 1])
                   and (i == 0 or not lines[i - 1].strip()))
        if heading:
            sections.append((line.strip(), []))
            i += 2
            continue
        sections[-1][1].append(line)
        i += 1
    return [(title, body) for title, body in sections if title or "\n".join(body).strip()]


def _dedent(lines):
    """`lines` less their common indentation, without leading and trailing blank lines."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    cut = min((_indent(line) for line in lines if line.strip()), default=0)
    return [line[cut:] for line in lines]


def parse_entries(lines):
    """`name : type [-- description]` entries, the description continuing on indented lines, as
    `griffe.DocstringParameter`s (type as written, less reST's backticks). Lines before the first entry or not
    shaped like an entry head continue the previous description."""
    entries = []
    unpacked = []
    for line in _dedent(lines):
        packed = line.strip() and _indent(line) == 0 and ENTRY.match(line.partition(" : ")[0].strip())
        unpacked += [part for part in PACKED.split(line) if part] if packed else [line]
    for line in unpacked:
        head, _, rest = line.partition(" -- ")
        name, _, annotation = head.partition(" : ")
        if line.strip() and _indent(line) == 0 and ENTRY.match(name.strip()):
            entries.append([name.strip(), annotation.strip().replace("`", ""), rest.strip(), []])   # shown as code
        elif entries:
            entries[-1][3].append(line)
        elif line.strip():
            entries.append(["", "", line.strip(), []])
    return [griffe.DocstringParameter(name, annotation=annotation or None,
                                      description=escape_brackets("\n".join([first, *_dedent(more)]).strip()))
            for name, annotation, first, more in entries]


def parse_examples(lines):
    """Python console blocks (from a `>>>` line to the next blank line) and the text between them."""
    chunks = []   # [kind, lines]
    for line in _dedent(lines):
        kind = griffe.DocstringSectionKind.examples if (
            line.lstrip().startswith(">>>") or (chunks and chunks[-1][0] == griffe.DocstringSectionKind.examples
                                                  and line.strip())) else griffe.DocstringSectionKind.text
        if not chunks or chunks[-1][0] != kind:
            chunks.append([kind, []])
        chunks[-1][1].append(line)
    return [(kind, "\n".join(_dedent(body))) for kind, body in chunks if "\n".join(body).strip()]


def parse(text, anchors):
    """The `griffe.DocstringSection`s of one Sionna-style docstring (`anchors`: `design_anchors()`)."""
    sections = []
    for title, body in split_sections(link_citations(rst_to_markdown(text), anchors)):
        if title is None:       # the description; `>>>` examples in it are console blocks, as under Example
            sections += [griffe.DocstringSectionExamples([(kind, chunk)])
                         if kind == griffe.DocstringSectionKind.examples
                         else griffe.DocstringSectionText(escape_brackets(chunk))
                         for kind, chunk in parse_examples(body)]
        elif title in PARAMETER_SECTIONS:
            sections.append(griffe.DocstringSectionParameters(parse_entries(body), title=title))
        elif title in EXAMPLE_SECTIONS:
            sections.append(griffe.DocstringSectionExamples(parse_examples(body), title=title))
        else:
            kind = title.lower().rstrip("s") if title.lower() in ("notes", "warnings") else title.lower()
            sections.append(griffe.DocstringSectionAdmonition(
                kind=kind.replace(" ", "-"), text=escape_brackets("\n".join(_dedent(body))), title=title))
    return sections


class SionnaDocstrings(griffe.Extension):
    """Fill every docstring's parsed sections with `parse` once the object tree is built."""

    def __init__(self):
        super().__init__()
        self.anchors = design_anchors()

    def on_object(self, *, obj, loader, **kwargs):
        if obj.docstring is not None:
            obj.docstring.__dict__["parsed"] = parse(obj.docstring.value, self.anchors)   # Docstring.parsed's cache
