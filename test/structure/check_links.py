#!/usr/bin/env python3
"""Check the links of README.md and docs/*.md.

Every relative link must name a file or directory inside the repository, and a
link with a #fragment must name a heading of its Markdown file (GitHub's
anchors).  The README may link nowhere else: no URL, nothing outside the
tree, since a user's clone has nothing beside it.  The README must also stay
under 300 lines.  Prints each problem as FILE:LINE: message and exits 1 if
there is one.

    test/structure/check_links.py [REPO]
"""

import os
import re
import sys

README_MAX_LINES = 300

LINK = re.compile(r'!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
REFDEF = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$')
AUTOLINK = re.compile(r'<((?:https?|mailto|ftp):[^>\s]+)>')
SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:')


def outside_fences(text):
    """(line number, line) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.split('\n'), 1):
        stripped = line.lstrip()
        marker = re.match(r'(`{3,}|~{3,})', stripped)
        if fence is None and marker:
            fence = marker.group(1)[0] * len(marker.group(1))
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        yield number, line


def prose_lines(text):
    """Lines outside fenced code blocks, with inline code spans blanked out."""
    for number, line in outside_fences(text):
        yield number, re.sub(r'(`+)(.+?)\1', lambda m: ' ' * len(m.group(0)), line)


def links(text):
    for number, line in prose_lines(text):
        for m in LINK.finditer(line):
            yield number, m.group(1)
        m = REFDEF.match(line)
        if m:
            yield number, m.group(1)
        for m in AUTOLINK.finditer(line):
            yield number, m.group(1)


def check_file(repo, path, external_allowed, problems):
    rel = os.path.relpath(path, repo)
    with open(path, encoding='utf-8') as f:
        text = f.read()
    for number, target in links(text):
        where = '%s:%d' % (rel, number)
        if SCHEME.match(target):
            if not external_allowed:
                problems.append('%s: link %s leaves the repository' % (where, target))
            continue
        file_part, _, fragment = target.partition('#')
        resolved = os.path.realpath(
            os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if os.path.commonpath([resolved, repo]) != repo:
            problems.append('%s: link %s points outside the repository' % (where, target))
            continue
        if not os.path.exists(resolved):
            problems.append('%s: link %s names a missing file' % (where, target))
            continue
        if fragment:
            if not resolved.endswith('.md'):
                problems.append('%s: link %s has a fragment but is no Markdown file'
                                % (where, target))
            elif fragment not in heading_anchors(resolved):
                problems.append('%s: link %s names no heading of %s'
                                % (where, target, os.path.relpath(resolved, repo)))


def heading_anchors(path):
    """The anchors GitHub gives the headings of a Markdown file: lower case,
    punctuation dropped, spaces as hyphens, -1, -2 ... for repeats."""
    seen = {}
    result = set()
    with open(path, encoding='utf-8') as f:
        text = f.read()
    for _, line in outside_fences(text):
        m = re.match(r'^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$', line)
        if not m:
            continue
        slug = re.sub(r'[^\w\- ]', '', m.group(1).lower()).replace(' ', '-')
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        result.add(slug if n == 0 else '%s-%d' % (slug, n))
    return result


def main():
    repo = os.path.realpath(sys.argv[1] if len(sys.argv) > 1 else
                            os.path.join(os.path.dirname(__file__), '..', '..'))
    readme = os.path.join(repo, 'README.md')
    problems = []
    with open(readme, encoding='utf-8') as f:
        count = f.read().count('\n')
    if count >= README_MAX_LINES:
        problems.append('README.md: %d lines, the limit is %d' % (count, README_MAX_LINES))
    check_file(repo, readme, False, problems)
    docs = os.path.join(repo, 'docs')
    for name in sorted(os.listdir(docs)) if os.path.isdir(docs) else []:
        if name.endswith('.md'):
            check_file(repo, os.path.join(docs, name), True, problems)
    for p in problems:
        print(p)
    print('check_links: README.md %d lines; %s' %
          (count, '%d problem(s)' % len(problems) if problems else 'every link resolves'))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
