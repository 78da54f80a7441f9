"""Shared by the command-line tests: run ``fastnn``'s main() in-process."""

from fastnn.cli import main


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of ``fastnn ARGV...`` run in this process."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err
