#!/usr/bin/env python3
"""Check the shape of the C sources in src/.

  * every src/*.c file is under 1,100 lines;
  * no function is over 120 lines (from its return type to its closing
    brace);
  * no cycle among the src/*.c files when file A -> file B means "A uses a
    function or variable that B defines", and none among the headers'
    #include lines.

It reads the sources only (comments and literals stripped, top-level
definitions found by brace depth), so it needs no build; a use inside a
static inline function of a header counts for each file that calls it.  Prints the size
of the largest file and function, every file's uses of the others
(with -v, or when there is a cycle), and each problem; exits 1 if there is
one.

    test/structure/check_code.py [-v] [REPO]
"""

import os
import re
import sys

MAX_FILE_LINES = 1100       # a file must stay below this
MAX_FUNCTION_LINES = 120    # a function may have at most this many

TOKEN = re.compile(r'[A-Za-z_][A-Za-z0-9_]*|\S')
KEYWORDS = {
    'if', 'while', 'for', 'switch', 'return', 'sizeof', 'do', 'else',
    'case', 'default', 'goto', 'break', 'continue',
}


def strip_code(text):
    """The text with comments, string and character literals and
    preprocessor lines blanked, line breaks kept."""
    out = []
    i = 0
    n = len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == '#':
            # a preprocessor line, with its continuations
            while i < n and text[i] != '\n':
                if text[i] == '\\' and i + 1 < n and text[i + 1] == '\n':
                    out.append('\n')
                    i += 2
                    continue
                i += 1
            continue
        if c == '/' and text.startswith('/*', i):
            end = text.find('*/', i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r'[^\n]', ' ', text[i:end]))
            i = end
            continue
        if c == '/' and text.startswith('//', i):
            while i < n and text[i] != '\n':
                i += 1
            continue
        if c in '"\'':
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            out.append(c + ' ' * (min(j, n) - i - 1) + c)
            i = j + 1
            continue
        if c == '\n':
            at_line_start = True
        elif not c.isspace():
            at_line_start = False
        out.append(c)
        i += 1
    return ''.join(out)


def tokens_with_lines(code):
    line = 1
    pos = 0
    for m in TOKEN.finditer(code):
        line += code.count('\n', pos, m.start())
        pos = m.start()
        yield m.group(0), line


def top_level(code, bodies=None):
    """Definitions at file scope: (kind, name, is_static, first, last line)
    for functions, and the same for variables.  With bodies (a dict), the
    identifiers each function body uses go into bodies[name]."""
    result = []
    depth = 0
    stmt = []                   # tokens of the current file-scope statement
    body_start = None
    body = set()
    for tok, line in tokens_with_lines(code):
        if body_start is not None and re.match(r'[A-Za-z_]\w*$', tok):
            body.add(tok)
        if depth == 0 and body_start is None:
            if tok == '{':
                # a function body follows a parameter list; anything else
                # (struct, enum, initializer) is part of the statement
                if stmt and stmt[-1][0] == ')' and '=' not in [t for t, _ in stmt]:
                    body_start = stmt
                    depth = 1
                    continue
                stmt.append((tok, line))
                depth = 1
                continue
            if tok == ';':
                declare_variables(stmt, result)
                stmt = []
                continue
            stmt.append((tok, line))
            continue
        if tok == '{':
            depth += 1
        elif tok == '}':
            depth -= 1
            if depth == 0:
                if body_start is not None:
                    name = function_name(body_start)
                    if name:
                        words = [t for t, _ in body_start]
                        result.append(('function', name, 'static' in words,
                                       body_start[0][1], line))
                        if bodies is not None:
                            bodies[name] = body
                    body_start = None
                    body = set()
                    stmt = []
                else:
                    stmt.append((tok, line))
        elif body_start is None:
            stmt.append((tok, line))
    return result


def function_name(stmt):
    """The identifier before the parameter list that ends stmt."""
    depth = 0
    for i in range(len(stmt) - 1, -1, -1):
        tok = stmt[i][0]
        if tok == ')':
            depth += 1
        elif tok == '(':
            depth -= 1
            if depth == 0:
                if i > 0 and re.match(r'[A-Za-z_]\w*$', stmt[i - 1][0]):
                    return stmt[i - 1][0]
                return None
    return None


def declare_variables(stmt, result):
    """Variables defined by a file-scope declaration (not extern, not a
    typedef, not a prototype)."""
    words = [t for t, _ in stmt]
    if not words or 'extern' in words or 'typedef' in words:
        return
    # the declarators: split on top-level commas, name before = or [ or end
    depth = 0
    current = []
    declarators = []
    for tok in words:
        if tok in '([{':
            depth += 1
        elif tok in ')]}':
            depth -= 1
        if tok == ',' and depth == 0:
            declarators.append(current)
            current = []
        else:
            current.append(tok)
    declarators.append(current)
    for d in declarators:
        if '=' in d:
            d = d[:d.index('=')]
        while d and d[-1] == ']':
            d = d[:d.index('[')] if '[' in d else d[:-1]
        if not d or not re.match(r'[A-Za-z_]\w*$', d[-1]):
            continue
        if '(' in d and d[-1] != ')':
            # "int (*hook) (void)" style pointers: the name is inside
            inner = [t for t in d[d.index('(') + 1:] if re.match(r'[A-Za-z_]\w*$', t)]
            if not inner:
                continue
        name = d[-1]
        if name in ('struct', 'union', 'enum') or len(d) < 2:
            continue
        result.append(('variable', name, 'static' in words, stmt[0][1], stmt[-1][1]))


def header_inline_uses(src):
    """The identifiers each static inline function of src/*.h uses."""
    bodies = {}
    for f in sorted(os.listdir(src)):
        if f.endswith('.h'):
            with open(os.path.join(src, f), encoding='utf-8') as fh:
                top_level(strip_code(fh.read()), bodies)
    return bodies


def with_inline_uses(names, inline):
    """names plus what the header inline functions among them use, in turn."""
    todo = [n for n in names if n in inline]
    names = set(names)
    while todo:
        for n in inline[todo.pop()]:
            if n not in names:
                names.add(n)
                if n in inline:
                    todo.append(n)
    return names


def analyse(repo):
    src = os.path.join(repo, 'src')
    files = sorted(f for f in os.listdir(src) if f.endswith('.c'))
    inline = header_inline_uses(src)
    defined = {}                # symbol -> file
    idents = {}                 # file -> set of identifiers used
    functions = []              # (lines, file, name)
    sizes = {}
    problems = []
    for f in files:
        with open(os.path.join(src, f), encoding='utf-8') as fh:
            text = fh.read()
        sizes[f] = text.count('\n')
        code = strip_code(text)
        for kind, name, is_static, first, last in top_level(code):
            if kind == 'function':
                functions.append((last - first + 1, f, name, first))
            if not is_static:
                if name in defined and defined[name] != f:
                    problems.append('%s and %s both define %s' % (defined[name], f, name))
                defined[name] = f
        idents[f] = with_inline_uses(
            set(t for t, _ in tokens_with_lines(code)
                if re.match(r'[A-Za-z_]\w*$', t) and t not in KEYWORDS), inline)
    uses = {f: {} for f in files}
    for f in files:
        for name in idents[f]:
            g = defined.get(name)
            if g and g != f:
                uses[f].setdefault(g, []).append(name)
    return files, sizes, functions, uses, problems


def header_includes(repo):
    src = os.path.join(repo, 'src')
    graph = {}
    for f in sorted(os.listdir(src)):
        if f.endswith('.h'):
            with open(os.path.join(src, f), encoding='utf-8') as fh:
                graph[f] = [m.group(1) for m in
                            re.finditer(r'^\s*#\s*include\s+"([^"]+)"', fh.read(), re.M)
                            if os.path.exists(os.path.join(src, m.group(1)))]
    return graph


def find_cycle(graph):
    """One cycle of graph (node -> iterable of nodes) as a list, or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 'open':
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 'done'
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def main():
    args = [a for a in sys.argv[1:] if a != '-v']
    verbose = '-v' in sys.argv[1:]
    repo = os.path.realpath(args[0] if args else
                            os.path.join(os.path.dirname(__file__), '..', '..'))
    files, sizes, functions, uses, problems = analyse(repo)

    for f in files:
        if sizes[f] >= MAX_FILE_LINES:
            problems.append('src/%s: %d lines (the limit is under %d)'
                            % (f, sizes[f], MAX_FILE_LINES))
    for lines, f, name, first in sorted(functions, reverse=True):
        if lines > MAX_FUNCTION_LINES:
            problems.append('src/%s:%d: %s() has %d lines (the limit is %d)'
                            % (f, first, name, lines, MAX_FUNCTION_LINES))

    cycle = find_cycle({f: uses[f].keys() for f in files})
    if cycle:
        problems.append('cycle among src/*.c: ' + ' -> '.join(cycle))
    hcycle = find_cycle(header_includes(repo))
    if hcycle:
        problems.append('#include cycle among src/*.h: ' + ' -> '.join(hcycle))

    if verbose or cycle:
        for f in files:
            for g in sorted(uses[f]):
                print('%s -> %s: %s' % (f, g, ', '.join(sorted(uses[f][g]))))
    largest = max(files, key=lambda f: sizes[f])
    longest = max(functions)
    for p in problems:
        print(p)
    print('check_code: %d files; largest src/%s (%d lines); longest function '
          '%s() in src/%s (%d lines); %d cross-file uses; %s' %
          (len(files), largest, sizes[largest], longest[2], longest[1], longest[0],
           sum(len(v) for v in uses.values()),
           '%d problem(s)' % len(problems) if problems else 'no cycle'))
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
