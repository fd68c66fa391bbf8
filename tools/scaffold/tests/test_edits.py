"""The edits that register a service in shared files, on the shapes they take after merges."""

from scaffold.edits import add_mypy_path, add_to_toml_lists, insert_import, insert_lines

PYPROJECT = """\
[tool.importlinter]
root_packages = ["contracts", "servicekit", "archiver", "scheduler", "fanout", "jobsctl"]

[[tool.importlinter.contracts]]
name = "services never import each other"
type = "independence"
modules = [
    "notes_api",
    "archiver",
    "fanout",
]

[[tool.importlinter.contracts]]
name = "jobsctl uses the public surface"
source_modules = ["jobsctl"]

[tool.mypy]
mypy_path = "libs/contracts/src:services/archiver/src:services/fanout/src"
"""


def test_the_new_service_joins_every_list_that_names_the_archiver() -> None:
    edited = add_to_toml_lists(PYPROJECT, beside="archiver", new="thumbnailer")

    root = edited.splitlines()[1]
    assert root.endswith('"fanout", "jobsctl", "thumbnailer"]')
    assert '    "archiver",\n    "thumbnailer",\n    "fanout",\n' in edited
    assert 'source_modules = ["jobsctl"]' in edited
    assert add_to_toml_lists(edited, beside="archiver", new="thumbnailer") == edited


def test_mypy_path_gets_the_service_beside_the_archiver() -> None:
    edited = add_mypy_path(PYPROJECT, beside="services/archiver/src", new="services/x/src")
    assert '"libs/contracts/src:services/archiver/src:services/x/src:services/fanout/src"' in edited


def test_lines_go_above_the_marker_when_there_is_one() -> None:
    source = 'class Service:\n    A = "a"\n    # scaffold: here\n    B = "b"\n'
    edited = insert_lines(source, marker="# scaffold: here", owner="Service", lines=['    X = "x"'])
    assert edited == 'class Service:\n    A = "a"\n    X = "x"\n    # scaffold: here\n    B = "b"\n'


def test_without_a_marker_lines_close_a_tuple_and_the_marker_comes_back() -> None:
    source = "ROWS = (\n    1,\n    2,\n)  # fmt: skip\nOTHER = 3\n"
    edited = insert_lines(source, marker="# scaffold: rows", owner="ROWS", lines=["    3,"])
    assert (
        edited
        == "ROWS = (\n    1,\n    2,\n    3,\n    # scaffold: rows\n)  # fmt: skip\nOTHER = 3\n"
    )


def test_without_a_marker_a_one_line_tuple_takes_the_item_inline() -> None:
    source = "_RUNTIME = (_ARCHIVER, _FANOUT)  # services whose runtime emits events\n"
    edited = insert_lines(source, marker="# m", owner="_RUNTIME", lines=["    Service.X,"])
    assert edited == (
        "_RUNTIME = (_ARCHIVER, _FANOUT, Service.X)  # services whose runtime emits events\n"
    )


def test_an_import_goes_after_the_last_top_level_import() -> None:
    source = '"""Doc."""\n\nfrom a import (\n    b,\n)\n\nX = 1\n'
    assert insert_import(source, "from c import d") == (
        '"""Doc."""\n\nfrom a import (\n    b,\n)\nfrom c import d\n\nX = 1\n'
    )
