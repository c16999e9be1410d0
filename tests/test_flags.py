"""Every numeric and list flag is checked when it is parsed: a bad value exits 2 with one line
naming the flag, in every command (the parsers are called in this process)."""
import argparse
import math

import pytest

from gluon_ssdcl.commands import check_data, digits, launch, models
from gluon_ssdcl.commands import checkpoint as checkpoint_command
from gluon_ssdcl.commands import detect, evaluate, train
from gluon_ssdcl.commands.common import class_names, comma_separated, integer, number


def test_number_takes_finite_values_in_its_range():
    momentum = number(0, 1, high_open=True)
    assert [momentum(t) for t in ('0', '0.9', '1e-3')] == [0.0, 0.9, 0.001]
    for text, words in [('nan', 'finite number >= 0 and < 1, got nan'), ('1', '< 1'),
                        ('-5', '>= 0'), ('inf', 'finite'), ('-inf', 'finite'),
                        ('ten', "got 'ten'")]:
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            momentum(text)
    positive = number(0, low_open=True)
    assert positive('1e308') == 1e308 and math.isfinite(positive('1e-300'))
    with pytest.raises(argparse.ArgumentTypeError, match='must be a finite number > 0, got 0'):
        positive('0')


def test_integer_takes_integers_in_its_range():
    port = integer(1, 65535)
    assert (port('1'), port('65535')) == (1, 65535)
    for text in ('0', '65536', '80.5', 'http', ''):
        with pytest.raises(argparse.ArgumentTypeError, match='a positive integer <= 65535'):
            port(text)
    with pytest.raises(argparse.ArgumentTypeError, match='an integer >= 0, got -1'):
        integer(0)('-1')


def test_lists_refuse_empty_and_repeated_names():
    assert class_names('cat, dog') == ['cat', 'dog'] and class_names('') == []
    for text, words in [('cat,,dog', 'empty'), (',,', 'empty'), ('cat,', 'empty'),
                        ('0,0,1', "'0' is repeated")]:
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            class_names(text)
    epochs = comma_separated(integer(0))
    assert epochs('160, 200') == [160, 200] and epochs('') == []
    with pytest.raises(argparse.ArgumentTypeError, match="an integer >= 0, got 'a'"):
        epochs('160,a')


CUSTOM = ['--dataset', 'custom', '--dataset-root', '.']
BAD = [  # (parse, argv, the flag the one line names)
    (train.parse_args, ['--momentum', 'nan'], '--momentum'),
    (train.parse_args, ['--momentum', '-5'], '--momentum'),
    (train.parse_args, ['--momentum', '1'], '--momentum'),
    (train.parse_args, ['--wd', '-1'], '--wd'),
    (train.parse_args, ['--wd', 'nan'], '--wd'),
    (train.parse_args, ['--clip-gradient', '-1'], '--clip-gradient'),
    (train.parse_args, ['--clip-gradient', 'nan'], '--clip-gradient'),
    (train.parse_args, ['--lr-decay', 'nan'], '--lr-decay'),
    (train.parse_args, ['--lr-decay', 'inf'], '--lr-decay'),
    (train.parse_args, ['--lr-decay', '0'], '--lr-decay'),
    (train.parse_args, ['--lr', '1e308'], '--lr'),
    (train.parse_args, ['--lmbd', 'inf'], '--lmbd'),
    (train.parse_args, ['--embed-dim', '100000000'], '--embed-dim'),
    (train.parse_args, ['--lr-decay-epoch', 'a'], '--lr-decay-epoch'),
    (train.parse_args, ['--lr-decay-epoch', '160,-1'], '--lr-decay-epoch'),
    (train.parse_args, CUSTOM + ['--classes', 'cat,cat'], '--classes'),
    (train.parse_args, CUSTOM + ['--classes', 'cat,,dog'], '--classes'),
    (train.parse_args, CUSTOM + ['--classes', ',,'], '--classes'),
    (launch.main, ['--port', '70000', '-n', '1', '--', 'python'], '--port'),
    (launch.main, ['--port', '0', '-n', '1', '--', 'python'], '--port'),
    (digits.main, ['--image-size', '100000'], '--image-size'),
    (digits.main, ['--max-digits', '100000'], '--max-digits'),
    (check_data.main, ['--root', '.', '--classes', '0,0,1'], '--classes'),
    (check_data.main, ['--root', '.', '--classes', ',,'], '--classes'),
    (evaluate.main, ['--params', 'x.params', '--classes', 'a,,b'], '--classes'),
    (evaluate.main, ['--params', 'x.params', '--unknown-classes', '8,8'], '--unknown-classes'),
    (evaluate.main, ['--params', 'x.params', '--quantile', 'nan'], '--quantile'),
    (detect.main, ['x.jpg', '--params', 'x.params', '--thresh', 'nan'], '--thresh'),
    (checkpoint_command.main, ['--convert'], '--convert'),
]


@pytest.mark.parametrize('parse, argv, flag', BAD, ids=[' '.join(a) for _, a, _ in BAD])
def test_a_bad_value_exits_2_with_one_line_naming_its_flag(capsys, parse, argv, flag):
    with pytest.raises(SystemExit) as stop:
        parse(argv)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f'argument {flag}' in line, line
    assert 'invalid literal' not in line and 'usage' not in line


def test_good_values_are_taken():
    args = train.parse_args(CUSTOM + ['--momentum', '0', '--wd', '0', '--clip-gradient', '0',
                                      '--lr', '10', '--lr-decay', '1', '--embed-dim', '4096',
                                      '--lr-mode', 'step', '--lr-decay-epoch', '3,5',
                                      '--classes', 'cat,dog'])
    assert (args.momentum, args.wd, args.clip_gradient, args.lr, args.lr_decay) == (
        0, 0, 0, 10, 1)
    assert (args.embed_dim, args.lr_decay_epoch) == (4096, [3, 5])
    assert args.classes.split(',') == ['cat', 'dog']


PARSERS = {'launch': launch.build_parser, 'digits': digits.build_parser,
           'check-data': check_data.build_parser, 'checkpoint': checkpoint_command.build_parser,
           'models': models.build_parser}


@pytest.mark.parametrize('name', PARSERS)
def test_help_shows_every_default(name):
    parser = PARSERS[name]()
    # pylint: disable-next=protected-access
    optional = [a for a in parser._actions if a.option_strings and not a.required
                and a.default != argparse.SUPPRESS]
    missing = [a.option_strings[-1] for a in optional if 'default' not in (a.help or '')]
    assert not missing, f'{name}: no default in the help of {missing}'
    assert parser.format_help()
