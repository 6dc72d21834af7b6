"""The README and the docs/ pages as the tests read them: the pages, a section by its heading,
the code blocks of a kind, the links and the headings' anchors."""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = "README.md"
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)


def pages():
    """README.md and every docs/*.md, as paths relative to the repository."""
    return [README] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def page_text(page):
    with open(os.path.join(ROOT, page)) as f:
        return f.read()


def section(page, heading):
    """The text of `page` from the line `heading` (e.g. "## From Python") to the next heading of
    the same or a higher level, code blocks included."""
    text = page_text(page)
    start = text.index(heading + "\n")
    level = len(heading) - len(heading.lstrip("#"))
    rest = FENCE.sub(lambda m: " " * len(m.group(0)), text[start + len(heading):])
    end = re.search(r"^#{1,%d} " % level, rest, flags=re.M)
    return text[start:start + len(heading) + (end.start() if end else len(rest))]


def code_blocks(text, language):
    return re.findall(r"```%s\n(.*?)```" % language, text, flags=re.S)


def links(page):
    """(target, anchor) of every relative link of a page: target '' for an anchor on the page."""
    found = re.findall(r"\]\(([^)\s:#]*)(?:#([^)\s]*))?\)", FENCE.sub("", page_text(page)))
    return [(target, anchor) for target, anchor in found if target or anchor]


def anchors(page):
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated one numbered."""
    seen, out = {}, set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page_text(page)), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return out


def deployment_examples():
    """The Python examples of docs/prediction.md's "Deploying with ONNX Runtime", in order."""
    return code_blocks(section("docs/prediction.md", "## Deploying with ONNX Runtime"), "python")
