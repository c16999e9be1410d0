"""Error text: a one-line reason from any error, MXNet's C++ stack traces included."""

__all__ = ['one_line']


def one_line(error) -> str:
    """The first line of an error's text, with an MXNet error's C++ stack trace cut down to its
    last line (the reason)."""
    text = str(error)
    head, found, trace = text.partition('Traceback (most recent call last):')
    if found:
        text = head + trace.strip().splitlines()[-1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return ' '.join(lines) if lines else type(error).__name__
