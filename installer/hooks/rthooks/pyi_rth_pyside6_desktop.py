# PyInstaller's run-time hook for PySide6 (PyInstaller 6.22, hooks/rthooks/pyi_rth_pyside6.py,
# Apache-2.0), skipped in runtime mode, and with the qt.conf step deferred to the first Qt import.
#
# The built-in hook runs before the entry script on every start and imports PySide6.QtCore (to
# register an embedded qt.conf). In `desktop --run-runtime ENTRY` - the frozen app standing in
# for `python ENTRY` - that would load Qt into every runtime process (about 100 ms and tens of
# MB per start, and PySide6 in the runtime's sys.modules). So: nothing in runtime mode,
# otherwise exactly what the built-in hook does.


def _pyi_rthook():
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "--run-runtime":
        return

    import os

    from _pyi_rth_utils import is_macos_app_bundle, prepend_path_to_environment_variable
    from _pyi_rth_utils import qt as qt_rth_utils

    qt_rth_utils.ensure_single_qt_bindings_package("PySide6")

    if sys.platform.startswith("win"):
        pyqt_path = os.path.join(sys._MEIPASS, "PySide6")
    else:
        pyqt_path = os.path.join(sys._MEIPASS, "PySide6", "Qt")

    os.environ["QT_PLUGIN_PATH"] = os.path.join(pyqt_path, "plugins")

    if is_macos_app_bundle:
        pyqt_path_res = os.path.normpath(
            os.path.join(sys._MEIPASS, "..", "Resources", os.path.relpath(pyqt_path, sys._MEIPASS))
        )
        os.environ["QML2_IMPORT_PATH"] = os.pathsep.join([
            os.path.join(pyqt_path_res, "qml"),
            os.path.join(pyqt_path, "qml"),
        ])
    else:
        os.environ["QML2_IMPORT_PATH"] = os.path.join(pyqt_path, "qml")

    if sys.platform.startswith("win"):
        prepend_path_to_environment_variable(sys._MEIPASS, "PATH")

    if sys.platform == "darwin" and not is_macos_app_bundle:
        prepend_path_to_environment_variable(sys._MEIPASS, "DYLD_LIBRARY_PATH")

    # The built-in hook registers the embedded qt.conf right here, importing QtCore (~80 ms) even
    # for CLI commands that never touch Qt. Do it when PySide6.QtCore is first imported instead.
    class _QtConfOnFirstImport:
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name != "PySide6.QtCore":
                return None
            sys.meta_path.remove(cls)
            import importlib.util

            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader

            class _Loader:
                def create_module(self, spec):
                    return loader.create_module(spec)

                def exec_module(self, module):
                    loader.exec_module(module)
                    qt_rth_utils.create_embedded_qt_conf("PySide6", pyqt_path)

            spec.loader = _Loader()
            return spec

    sys.meta_path.insert(0, _QtConfOnFirstImport)


_pyi_rthook()
del _pyi_rthook
