"""The ``draggan-studio`` console script: a plain sentence, not a traceback, when the app's packages are missing."""

import sys

from draggan import studio


def test_without_gradio_the_studio_script_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "app", raising=False)
    monkeypatch.setitem(sys.modules, "gradio", None)      # import gradio now fails as if it were not installed
    assert studio.main(["--help"]) == 1
    err = capsys.readouterr().err
    assert "draggan-studio[app]" in err and "Traceback" not in err
