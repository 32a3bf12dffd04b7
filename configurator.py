"""
The nanoGPT config contract, hardened:

    python train.py config/override_file.py --batch_size=32 --init_from=hf:models/tiny

A config file is Python executed with the current config as its globals; `--key=value` overrides
it. Unlike nanoGPT's exec-based original, a misspelled key is an error that names the nearest valid
keys (in files as well as on the command line), and every value is type checked against its
default: ints are accepted where floats are expected, bools are True/False/true/false, a key whose
default is None also takes None, and lists/dicts are Python literals. Values may contain '='.
The scripts' other shared command-line rules live here too: a bad option is one `error:` line
(ArgumentParser), and an output path is checked before any work (check_out_path).
"""
import argparse
import ast
import difflib
import io
import os
import sys
import tokenize
from pathlib import Path

BOOLS = {'True': True, 'true': True, 'False': False, 'false': False}


def allowed_types(key, defaults, types):
    """The types a key accepts: an explicit entry in `types`, else the default's own type
    (any type when the default is None; `object` also means any)."""
    t = types.get(key) or (object if defaults[key] is None else type(defaults[key]))
    t = tuple(t) if isinstance(t, (tuple, list)) else (t,)
    if defaults[key] is None:
        t += (type(None),)
    return t


def check(key, value, allowed):
    """Return value coerced to one of the allowed types, or raise ValueError."""
    if object in allowed:
        return value
    if isinstance(value, bool):  # bool is an int subclass: only accept it where a bool is expected
        ok = bool in allowed
    elif isinstance(value, int) and float in allowed and int not in allowed:
        return float(value)
    elif isinstance(value, tuple) and list in allowed:
        return list(value)
    else:
        ok = isinstance(value, allowed)
    if not ok:
        names = ' or '.join('None' if t is type(None) else t.__name__ for t in allowed)
        raise ValueError(f"{key}={value!r}: expected {names}, got {type(value).__name__}")
    return value


def parse(key, text, allowed):
    """Turn the text of --key=text into a value of an allowed type."""
    if text in BOOLS and bool in allowed:
        return BOOLS[text]
    if text == 'None' and type(None) in allowed:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = text  # a bare word like --init_from=resume is a string
    if not isinstance(value, str) and str in allowed and object not in allowed:
        try:
            return check(key, value, allowed)
        except ValueError:
            return text  # e.g. --dataset=1984 for a str key
    return check(key, value, allowed)


def unknown(key, valid, where):
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else " (run with --help for the list)"
    return ValueError(f"unknown config key {key!r} {where}{hint}")


def key_comments(path, in_classes=False):
    """{name: comment or None} for the `name = value  # comment` lines of a Python file: its top-level assignments,
    or with in_classes the annotated fields of its classes (a config dataclass such as model.py's GPTConfig)."""
    try:
        src = Path(path).read_text()
        tree = ast.parse(src)
        comments = {t.start[0]: t.string.lstrip('#').strip()
                    for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT}
    except (OSError, SyntaxError, ValueError, tokenize.TokenError):
        return {}
    nodes = [n for c in tree.body if isinstance(c, ast.ClassDef) for n in c.body] if in_classes else tree.body
    first = {}  # a name's first assignment is its config line; later ones (train.py's per-process values) are code
    for n in nodes:
        if isinstance(n, ast.AnnAssign) or isinstance(n, ast.Assign) and len(n.targets) == 1:
            t = n.targets[0] if isinstance(n, ast.Assign) else n.target
            if isinstance(t, ast.Name):
                first.setdefault(t.id, n.end_lineno)
    return {name: comments.get(line) for name, line in first.items()}


def print_help(defaults):
    """The keys, their defaults and the comment each has in the script's config section (keys that come from a
    config class of the project, like train.py's model keys, take the comment of its field)."""
    script = Path(sys.argv[0]).resolve()
    notes = key_comments(script)
    for m in list(sys.modules.values()):  # the project's modules the script imported: keys it takes from their classes
        f = getattr(m, '__file__', None)
        if f and Path(f).resolve().parent == script.parent:
            notes = {**key_comments(f, in_classes=True), **notes}
    print(f"usage: python {script.name} [config/file.py ...] [--key=value ...]\nkeys, defaults and what they mean:")
    shown = {k: f"--{k}={v!r}" for k, v in defaults.items()}
    width = min(40, max(map(len, shown.values())))
    for k, text in shown.items():
        print(f"  {text:{width}}  {notes[k]}" if notes.get(k) else f"  {text}")


def resolve(defaults, argv, types=None):
    """Apply config files and --key=value args (in order) to a copy of defaults.
    Returns (config, explicit): the resolved dict and the keys the user set. Raises ValueError."""
    types, config, explicit = types or {}, dict(defaults), []
    for arg in argv:
        if arg in ('-h', '--help'):
            print_help(defaults)
            sys.exit(0)
        if not arg.startswith('--'):
            path = Path(arg)
            if not path.is_file():
                raise ValueError(f"config file not found: {arg}")
            scope = dict(config)
            try:
                tree = ast.parse(path.read_text(), str(path))
                exec(compile(tree, str(path), 'exec'), scope)
            except Exception as e:
                raise ValueError(f"{arg}: {type(e).__name__}: {e}") from None
            assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            for k, v in scope.items():
                if k.startswith('_') or callable(v) or isinstance(v, type(ast)):
                    continue  # imports, helpers and private names are not config
                if k not in defaults:
                    raise unknown(k, list(defaults), f"in {arg}")
                if v is config[k] and k not in assigned:
                    continue  # not set by this file
                try:
                    config[k] = check(k, v, allowed_types(k, defaults, types))
                except ValueError as e:
                    raise ValueError(f"{arg}: {e}") from None
                explicit.append(k)
        else:
            key, eq, text = arg[2:].partition('=')
            if not eq:
                raise ValueError(f"expected --key=value, got {arg!r}")
            if key not in defaults:
                raise unknown(key, list(defaults), "on the command line")
            config[key] = parse(key, text, allowed_types(key, defaults, types))
            explicit.append(key)
    return config, list(dict.fromkeys(explicit))


def configure(defaults, argv=None, types=None):
    """Script entry point: the resolved config dict; a bad config is a one-line error and exit 1."""
    try:
        config, explicit = resolve(defaults, sys.argv[1:] if argv is None else argv, types)
    except ValueError as e:
        sys.exit(f"error: {e}")
    for k in explicit:
        print(f"config: {k} = {config[k]!r}", file=sys.stderr)
    return config


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the scripts with subcommands (eval.py, convert.py), under the same error contract:
    a bad option is one `error:` line on stderr and exit 2, not a usage dump."""

    def error(self, message):
        self.exit(2, f"error: {message} (see python {self.prog} --help)\n")


def check_out_path(out, inputs=(), directory=False):
    """Refuse an output path before any work: one that is an input (writing it would destroy the source),
    a directory where a file is wanted (or the reverse), or a path below a regular file. -> ValueError."""
    out = Path(out)
    for src in (f for spec in inputs for f in spec_files(spec)):
        if out.exists() and os.path.exists(src) and os.path.samefile(out, src):
            raise ValueError(f"output {out} is also an input ({src}): writing it would overwrite the source; choose another path")
    if out.exists() and out.is_dir() != directory:
        raise ValueError(f"output {out} exists and is a {'directory' if out.is_dir() else 'file'}; "
                         f"give a {'directory' if directory else 'file path'}")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"output {out} is below {parent}, which is a file, not a directory")


def spec_files(spec):
    """The files a model spec (or a plain input path) reads: a run dir's or HF dir's files, both llama2c files."""
    spec = str(spec)
    if spec.startswith('llama2c:'):
        return [p for p in spec[len('llama2c:'):].split(',') if p]
    path = spec[len('hf:'):] if spec.startswith('hf:') else spec
    return [os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [path]
