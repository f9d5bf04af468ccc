#!/usr/bin/python3
"""Every relative link in README.md and docs/*.md must name a file or directory that exists, and a
link to a section of a Markdown file (docs/cache.md#using-it) a heading of that file, so that moving
or renaming a document or a section cannot leave the README pointing nowhere. Links to the web
(http:, https:, mailto:) are not followed."""

import glob
import os
import re
import sys

# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = ("http://", "https://", "mailto:")


def links_in(document):
    with open(document, encoding="utf-8") as file:
        text = file.read()
    # Code blocks hold shell and C++, whose brackets are not links.
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    return [target for target in MARKDOWN_LINK.findall(text) if not target.startswith(EXTERNAL)]


def heading_anchors(markdown_file):
    """The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as dashes."""
    with open(markdown_file, encoding="utf-8") as file:
        text = re.sub(r"```.*?```", "", file.read(), flags=re.DOTALL)
    anchors = set()
    for heading in re.findall(r"^#+\s+(.*?)\s*$", text, flags=re.MULTILINE):
        anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(anchor)
    return anchors


def broken_links(document):
    broken = []
    for target in links_in(document):
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(document), path)) if path else document
        if not os.path.exists(resolved):
            broken.append(target)
        elif anchor and resolved.endswith(".md") and anchor not in heading_anchors(resolved):
            broken.append(target)
    return broken


def main(source_dir):
    documents = [os.path.join(source_dir, "README.md")] + sorted(glob.glob(os.path.join(source_dir, "docs", "*.md")))
    links_broken = 0
    readme_links = len(links_in(documents[0]))
    if readme_links == 0:
        print("README.md: no relative link found; the check would prove nothing", file=sys.stderr)
        return 1
    for document in documents:
        for target in broken_links(document):
            print(f"{os.path.relpath(document, source_dir)}: no such file or section: {target}", file=sys.stderr)
            links_broken += 1
    return 1 if links_broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
