"""The package's layout rule: the library is import-only, the commands live in one subpackage and
import no other command, and the subpackages import one another in one direction only."""
import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'gluon_ssdcl')

# the earlier ``python -m gluon_ssdcl.<name>`` command names, kept as thin shims
SHIMS = ('evaluate', 'detect', 'export', 'register', 'checkpoint', 'model_zoo', 'launch',
         'data.digits', 'data.check', '__main__')
# subpackages (and top-level modules) from the bottom up: each imports only those before it
LAYERS = ('utils', 'data', 'model', 'losses', 'engine', 'embeddings', 'evaluation', 'viz',
          'deploy', 'experiments', 'commands')
COMMAND_ERRORS = ('CommandError', 'UsageError', 'OneLineErrorParser')


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def modules():
    """{dotted name: parsed tree} of every module of the package."""
    paths = glob.glob(os.path.join(PACKAGE, '**', '*.py'), recursive=True)
    return {module_name(p): ast.parse(open(p).read(), p) for p in paths}


def imported_modules(name: str, tree: ast.Module):
    """The package modules a module imports (relative imports resolved), with line numbers."""
    package = name.split('.') if _is_package(name) else name.split('.')[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            targets = [target] + [f'{target}.{alias.name}' for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        found += [(t, node.lineno) for t in targets if t.startswith('gluon_ssdcl')]
    return found


def _is_package(name: str) -> bool:
    return os.path.isfile(os.path.join(ROOT, *name.split('.'), '__init__.py'))


def layer(name: str):
    """The index in :data:`LAYERS` of a package module (None for the package itself)."""
    parts = name.split('.')
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def violations(name: str, tree: ast.Module):
    """What a library module does that only a command may."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
                getattr(node.test.left, 'id', None) == '__name__':
            found.append(f'{name}:{node.lineno}: has a __main__ block')
        elif isinstance(node, ast.Name) and node.id in COMMAND_ERRORS:
            found.append(f'{name}:{node.lineno}: uses {node.id}')
        elif isinstance(node, ast.Attribute) and node.attr in ('exit', 'ArgumentParser') and \
                getattr(node.value, 'id', None) in ('sys', 'argparse'):
            found.append(f'{name}:{node.lineno}: calls {node.value.id}.{node.attr}')
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, 'module', None) or '']
            if 'argparse' in names:
                found.append(f'{name}:{node.lineno}: imports argparse')
    lines = sorted({line for target, line in imported_modules(name, tree)
                    if target.startswith('gluon_ssdcl.commands')})
    return found + [f'{name}:{line}: imports the commands package' for line in lines]


def is_shim(name: str) -> bool:
    return name in {f'gluon_ssdcl.{s}' for s in SHIMS}


def library(all_modules):
    return {n: t for n, t in all_modules.items()
            if not n.startswith('gluon_ssdcl.commands') and not is_shim(n)}


def test_the_library_is_import_only():
    found = library(modules())
    assert len(found) > 30
    problems = [p for name, tree in found.items() for p in violations(name, tree)]
    assert not problems, '\n'.join(problems)


def test_the_check_finds_what_only_a_command_may_do():
    tree = ast.parse('import argparse\nimport sys\nfrom ..commands.common import CommandError\n'
                     'def f():\n    raise CommandError("x")\n'
                     'if __name__ == "__main__":\n    sys.exit(f())\n')
    problems = violations('gluon_ssdcl.data.bad', tree)
    # argparse, the commands import, CommandError, __main__, sys.exit
    assert len(problems) == 5, problems


def test_no_command_imports_another():
    commands = {n: t for n, t in modules().items()
                if n.startswith('gluon_ssdcl.commands.')}
    assert len(commands) >= 10
    allowed = {'gluon_ssdcl.commands', 'gluon_ssdcl.commands.common'}
    problems = [f'{name}:{line}: imports {target}'
                for name, tree in commands.items() if name != 'gluon_ssdcl.commands.common'
                for target, line in imported_modules(name, tree)
                if target.startswith('gluon_ssdcl.commands') and target not in allowed
                and _is_module(target)]
    assert not problems, '\n'.join(problems)


def _is_module(name: str) -> bool:
    return os.path.isfile(os.path.join(ROOT, *name.split('.')) + '.py') or _is_package(name)


def test_subpackages_import_downwards_only():
    found = modules()
    problems = []
    for name, tree in found.items():
        own = layer(name)
        if own is None or is_shim(name):
            continue
        for target, line in imported_modules(name, tree):
            other = layer(target)
            if other is not None and other > own and _is_module(target):
                problems.append(f'{name}:{line}: imports {target} ({LAYERS[other]} is above '
                                f'{LAYERS[own]})')
    assert not problems, '\n'.join(problems)


def test_every_module_has_a_layer():
    names = [n for n in modules() if n != 'gluon_ssdcl' and not is_shim(n)]
    assert [n for n in names if layer(n) is None] == []


@pytest.mark.parametrize('shim', SHIMS)
def test_a_shim_only_runs_its_command(shim):
    tree = modules()[f'gluon_ssdcl.{shim}']
    body = [node for node in tree.body
            if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    imports = [node for node in body if isinstance(node, ast.ImportFrom)]
    assert len(imports) == 1 and imports[0].module == 'commands'
    assert [alias.name for alias in imports[0].names] == ['run_command']
    assert len(body) == 2, ast.dump(tree)
