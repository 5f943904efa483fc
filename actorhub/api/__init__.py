"""The public API a program calls: init, remote, get, put, wait, actor classes and handles.

`actorhub/__init__.py` re-exports what users import; the modules here build on the runtime.
"""
