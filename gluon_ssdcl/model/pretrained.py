"""Weights shipped with the package: ``get_model(name, pretrained=True)`` and ``--pretrained``.

A shipped model is a checkpoint (:mod:`gluon_ssdcl.engine.checkpoint`: ``<name>.params``,
``<name>.state`` and its class bank ``<name>.openset.npz``) in the package's ``weights`` folder,
recorded in :data:`SHIPPED` with the SHA-256 of each file and the command that made it. Nothing
is downloaded: on first use the files are copied, checksums verified, to a folder of the user
(``~/.gluon_ssdcl/models`` by default, as GluonCV keeps its weights in ``~/.mxnet/models``), so
that what the commands write beside a checkpoint (a registered class, results) goes there and
never into the installed package.
"""
import os
import shutil
from typing import Dict, List, NamedTuple, Optional

from ..utils.files import atomic_path, check_file, file_sha256

__all__ = ['Shipped', 'SHIPPED', 'DEFAULT_PRETRAINED', 'pretrained_names', 'shipped_checkpoint',
           'WEIGHTS_DIR', 'DEFAULT_ROOT']

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'weights')
DEFAULT_ROOT = os.path.join('~', '.gluon_ssdcl', 'models')


class Shipped(NamedTuple):
    """A shipped checkpoint: SHA-256 of each of its files (suffix -> hex digest), how it was
    made (``command``, at the package's ``commit``) and its VOC07 mAP on the default
    validation set (``val_map``, of the float16 weights shipped)."""
    sha256: Dict[str, str]
    command: str
    commit: str
    val_map: float


# model name -> its shipped checkpoint (the files are WEIGHTS_DIR/<name><suffix>); made by
# benchmarks/ship_pretrained.py from the best checkpoint of the command (its table:
# docs/results.md, "The shipped model")
SHIPPED: Dict[str, Shipped] = {
    'ssd_256_small_center_digits': Shipped(
        sha256={'.params': '121a619e0a27265030bf457118b0b7a2a23bb250e919cd8b58567873a59c6aa0',
                '.state': 'd169ff67bb0d6bdd61e90d3b1bfc19c7b754d42ee09d96ecd428d6ec055ab1a9',
                '.openset.npz': '416a0b56285b6e09248a19759705c7987ff19787b056bd5eb71fe1f39bd6833a'},
        command='gluon-ssdcl train --center-loss --lmbd 1 --alpha 0.5',
        commit='1dcabcdc1dc4093b6f8f42a78def93a86d74a00c', val_map=0.8794),
}
DEFAULT_PRETRAINED = 'ssd_256_small_center_digits'


def pretrained_names() -> List[str]:
    """Names of the models shipped with weights, sorted."""
    return sorted(SHIPPED)


def _shipped(name: str) -> Shipped:
    if name not in SHIPPED:
        shipped = ', '.join(pretrained_names()) or 'none in this installation'
        raise ValueError(f"no pretrained weights ship for {name} (shipped: {shipped}); "
                         "train it with gluon-ssdcl train")
    return SHIPPED[name]


def shipped_checkpoint(name: str = DEFAULT_PRETRAINED, root: Optional[str] = None) -> str:
    """The weights file ``<root>/<name>.params`` of the shipped checkpoint of ``name``, copied
    there from the package on first use.

    Each package file is verified against its recorded SHA-256 before it is copied; the copy's
    weights and state are verified on every call (a class bank changed by a registered class is
    the user's to keep, and is never copied over).

    Parameters
    ----------
    name : str
        A name of :func:`pretrained_names`.
    root : str, optional
        Folder of the copies (default ``~/.gluon_ssdcl/models``).

    Raises
    ------
    ValueError
        One line: no weights ship for ``name``; a shipped file is damaged (reinstall); the
        copy's weights or state are not the shipped ones (delete them to copy them again).
    OSError
        The folder cannot be written, naming it.
    """
    shipped = _shipped(name)
    root = os.path.expanduser(root or DEFAULT_ROOT)
    os.makedirs(root, exist_ok=True)
    for suffix, sha in shipped.sha256.items():
        copy = os.path.join(root, name + suffix)
        if os.path.lexists(copy):
            if suffix != '.openset.npz' and file_sha256(copy) != sha:
                raise ValueError(f"{copy} is not the shipped {name}{suffix} (its SHA-256 "
                                 "differs): delete it and it is copied again from the package")
            continue
        source = os.path.join(WEIGHTS_DIR, name + suffix)
        check_file(source, f'shipped file of {name}')
        if file_sha256(source) != sha:
            raise ValueError(f"{source} is damaged (its SHA-256 is not the recorded one): "
                             "reinstall gluon_ssdcl")
        with atomic_path(copy) as tmp:
            shutil.copyfile(source, tmp)
    return os.path.join(root, name + '.params')
