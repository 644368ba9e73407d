"""ImportWatch: a callback after a module is imported, and only then."""

from __future__ import annotations

import sys

from nantrap.run.imports import ImportWatch


def test_fires_after_import_and_only_once(tmp_path, monkeypatch):
    (tmp_path / "late_pkg.py").write_text("VALUE = 41\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    watch = ImportWatch("late_pkg", lambda mod: seen.append(mod.VALUE))
    watch.start()
    try:
        assert seen == []
        import late_pkg  # noqa: F401

        assert seen == [41]
        assert watch not in sys.meta_path  # removed after firing
    finally:
        watch.stop()
        sys.modules.pop("late_pkg", None)


def test_fires_at_once_for_a_module_already_imported():
    seen = []
    ImportWatch("json", lambda mod: seen.append(mod.__name__)).start()
    assert seen == ["json"]


def test_stop_before_import_means_no_call(tmp_path, monkeypatch):
    (tmp_path / "never_pkg.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    watch = ImportWatch("never_pkg", seen.append)
    watch.start()
    watch.stop()
    import never_pkg  # noqa: F401

    sys.modules.pop("never_pkg", None)
    assert seen == []
